"""A Ray head on loopback in its own process group, for tests and benchmarks (like the Label Studio launcher).

``with RayHead(tmp, num_cpus=2) as address:`` starts ``ray start --head --block`` from this
Python's environment, connects this process as the driver, and on exit disconnects and stops
the head with every worker it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    def __init__(self, temp_dir: Path, num_cpus: int = 2, object_store_mb: int | None = None,
                 timeout: float = 60.0) -> None:
        self.temp_dir = Path(temp_dir)
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.timeout = timeout
        self.address = f"127.0.0.1:{_free_port()}"
        self.client_address = f"ray://127.0.0.1:{_free_port()}"  # Ray Client: a driver on no Ray node connects here
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        import ray

        cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        port = self.address.rsplit(":", 1)[1]
        cmd = [cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", port,
               "--num-cpus", str(self.num_cpus), "--num-gpus", "0", "--include-dashboard", "false",
               "--disable-usage-stats", "--temp-dir", str(self.temp_dir),
               "--ray-client-server-port", self.client_address.rsplit(":", 1)[1]]
        if self.object_store_mb:
            cmd += ["--object-store-memory", str(self.object_store_mb * 2**20)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                ray.init(address=self.address, log_to_driver=False, namespace="sae-backend")
                return self.address
            except Exception:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.__exit__(None, None, None)
                    raise
                time.sleep(1)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        import ray

        ray.shutdown()
        if self._proc is None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None
