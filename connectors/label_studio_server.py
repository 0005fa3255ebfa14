"""Run a real Label Studio on loopback (own venv, own data dir) for the integration tests and the demo.

Label Studio pins its own label-studio-sdk and pulls ~1 GB of dependencies, so it lives in a
venv of its own (``<home>/venv``), never in the backend's environment.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LABEL_STUDIO_VERSION = "1.23.2"
# Label Studio's own feature flag (an environment variable; off in the flags file 1.23 ships): with it a
# prediction import recounts only the tasks it writes to, instead of every task of the project.
IMPORT_RECOUNT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
DEFAULT_USERNAME = "admin@example.com"
DEFAULT_PASSWORD = "sae-backend-demo"
DEFAULT_TOKEN = "sae0backend0demo0token000000000000000001"
_STARTED = re.compile(rb"Starting development server at https?://[^:/]+:(\d+)/")
# LS also reads these unprefixed names, so an ordinary shell's $HOST or $PORT would leak in.
_UNSET = ("USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG")


def default_home() -> Path:
    return Path(os.environ.get("SAE_LABEL_STUDIO_HOME") or ".label-studio").resolve()


def _installed(venv: Path) -> bool:
    """The dist-info only appears once pip finished, so a half-done install is not mistaken for one."""
    exe = venv / "bin" / "label-studio"
    return exe.exists() and any(venv.glob(f"lib/python3*/site-packages/label_studio-{LABEL_STUDIO_VERSION}.dist-info"))


def ensure_label_studio(home: Path | None = None) -> Path:
    """The ``label-studio`` executable in ``<home>/venv``, installed there first when missing.

    A file lock makes concurrent callers (parallel test sessions, the demo) wait for one install.
    """
    home = Path(home).resolve() if home else default_home()
    home.mkdir(parents=True, exist_ok=True)
    venv = home / "venv"
    exe = venv / "bin" / "label-studio"
    if _installed(venv):
        return exe
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(venv):
            return exe
        print(f"Installing label-studio=={LABEL_STUDIO_VERSION} into {venv} (about a minute, ~1 GB)...", flush=True)
        log = home / "install.log"
        with open(log, "w") as out:
            steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                      f"label-studio=={LABEL_STUDIO_VERSION}"]]
            for cmd in steps:
                if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                    raise RuntimeError(f"installing Label Studio failed ({' '.join(cmd[:3])} ...); {log}:\n{tail}")
        print(f"Installed label-studio=={LABEL_STUDIO_VERSION}.", flush=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    """The same check Label Studio makes before it silently moves to port+1."""
    for host in ("127.0.0.1", "localhost"):
        with socket.socket() as s:
            s.settimeout(1)
            try:
                if s.connect_ex((host, port)) == 0:
                    return True
            except OSError:
                pass
    return False


class LabelStudioServer:
    """A Label Studio process on 127.0.0.1 with a known admin user and legacy API token.

    ``with LabelStudioServer(dir) as ls: ...`` starts it and stops it at the end. The data dir
    keeps the SQLite database and the secret key, so starting again on it is fast (~4 s).
    """

    def __init__(self, data_dir: Path, port: int | None = None, username: str = DEFAULT_USERNAME,
                 password: str = DEFAULT_PASSWORD, token: str = DEFAULT_TOKEN, home: Path | None = None,
                 local_files_root: Path | None = None, env: dict[str, str] | None = None) -> None:
        """``env``: extra variables for the Label Studio process, e.g. a feature flag an operator sets."""
        if not 6 <= len(token) <= 40:
            raise ValueError("Label Studio accepts user tokens of 6 to 40 characters")
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._fixed_port = port is not None
        self.username = username
        self.password = password
        self._token = token
        self.home = home
        self.local_files_root = Path(local_files_root).resolve() if local_files_root else None
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Label Studio has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def log_path(self) -> Path:
        return self.data_dir / "label-studio.log"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _UNSET and not k.startswith("LABEL_STUDIO_")}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self._token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        })
        if self.local_files_root:
            env["LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LOCAL_FILES_DOCUMENT_ROOT"] = str(self.local_files_root)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> LabelStudioServer:
        """Launch the server and return once ``/health`` answers UP (first start: ~25 s of migrations)."""
        if self.running:
            return self
        if self.port is None:
            self.port = free_port()
        if port_busy(self.port):
            raise RuntimeError(f"port {self.port} is already in use; Label Studio would silently move to another one")
        exe = ensure_label_studio(self.home)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port)],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.data_dir, start_new_session=True)
        atexit.register(self.stop)
        try:
            self._wait_up(offset, time.monotonic() + timeout, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self, offset: int, deadline: float, timeout: float) -> None:
        announced = False
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with code {self.proc.returncode}; "
                                   f"{self.log_path}:\n{self.log_tail()}")
            if not announced:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    m = _STARTED.search(f.read())
                if m:
                    announced = True
                    actual = int(m.group(1))
                    if actual != self.port and self._fixed_port:
                        raise RuntimeError(f"Label Studio took port {actual} instead of {self.port}")
                    self.port = actual
            if announced:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                        return
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.5)
        raise TimeoutError(f"Label Studio did not answer /health within {timeout:.0f} s; "
                           f"{self.log_path}:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the whole process group (then kill it), so no worker outlives the server."""
        atexit.unregister(self.stop)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def restart(self, timeout: float = 180.0) -> LabelStudioServer:
        """Stop and start again on the same port and data dir, so clients keep their URL."""
        self.stop()
        deadline = time.monotonic() + 10
        while port_busy(self.port or 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.start(timeout)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
