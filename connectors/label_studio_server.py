"""Run a real Label Studio on loopback (own venv, own data dir) for the tests and the demo."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_TOKEN = "sae0backend0demo0token0000000000000000001"


def default_home() -> Path:
    return Path(os.environ.get("SAE_LABEL_STUDIO_HOME", ".label-studio")).resolve()


def ensure_label_studio(home: Path | None = None) -> Path:
    """The ``label-studio`` executable in ``<home>/venv``, installing it there when missing.

    Label Studio pins its own label-studio-sdk and ~1 GB of dependencies, so it lives in
    its own environment, never in the backend's.
    """
    home = Path(home) if home else default_home()
    home.mkdir(parents=True, exist_ok=True)
    exe = home / "venv" / "bin" / "label-studio"
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            print(f"installing label-studio=={LABEL_STUDIO_VERSION} into {home / 'venv'} (about a minute)",
                  flush=True)
            shutil.rmtree(home / "venv", ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
            subprocess.run([str(home / "venv" / "bin" / "pip"), "install", "-q",
                            f"label-studio=={LABEL_STUDIO_VERSION}"], check=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class LabelStudioServer:
    """``with LabelStudioServer(dir) as ls: ...`` starts Label Studio and stops it at the end."""

    def __init__(self, data_dir: Path, port: int | None = None, username: str = "admin@example.com",
                 password: str = "sae-backend-demo", token: str = DEFAULT_TOKEN, home: Path | None = None,
                 local_files_root: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.username, self.password, self.token = username, password, token
        self.home = home
        self.local_files_root = local_files_root
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG") and not k.startswith("LABEL_STUDIO_")}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir), "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password, "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
        })
        if self.local_files_root:
            env.update({"LOCAL_FILES_SERVING_ENABLED": "true",
                        "LOCAL_FILES_DOCUMENT_ROOT": str(Path(self.local_files_root).resolve())})
        return env

    def start(self, timeout: float = 240.0) -> LabelStudioServer:
        exe = ensure_label_studio(self.home)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif port_busy(self.port):
            raise RuntimeError(f"port {self.port} is busy; Label Studio would silently take another")
        log = open(self.data_dir / "label-studio.log", "ab")  # noqa: SIM115 - held by the child process
        self.proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1",
                                      "-p", str(self.port)], env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        p = self.data_dir / "label-studio.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def restart(self) -> LabelStudioServer:
        self.stop()
        return self.start()

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
