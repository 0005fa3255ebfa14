"""benchmarks/machine.py: how a raw result names the machine it ran on."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("machine", ROOT / "benchmarks" / "machine.py")
machine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(machine)


def test_the_processor_is_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.00GHz\n")
    assert machine.cpu_model(str(info)) == "Example CPU @ 2.00GHz"


def test_without_cpuinfo_the_architecture_is_named(tmp_path: Path) -> None:
    assert machine.cpu_model(str(tmp_path / "absent")) == (platform.processor() or platform.machine())
    (tmp_path / "no-model").write_text("processor\t: 0\n")
    assert machine.cpu_model(str(tmp_path / "no-model")) == (platform.processor() or platform.machine())


def test_the_record_names_torch_and_its_cpu_kernels() -> None:
    import torch

    w = machine.where()
    assert w["torch"] == torch.__version__ and w["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert w["machine"] == machine.describe() and w["processor"] == machine.cpu_model()
