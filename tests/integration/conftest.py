"""A real Label Studio (own venv, SQLite, loopback) and a real backend (uvicorn) for the integration tests."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from connectors.label_studio import LabelStudioClient
from connectors.label_studio_server import LabelStudioServer, free_port

DIGITS_CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
                 + "".join(f'<Choice value="{i}"/>' for i in range(10)) + "</Choices></View>")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder talks to a real Label Studio, so ``-m "not integration"`` skips it all."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """One server for the whole session: the first start spends ~25 s on migrations."""
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"),
                               local_files_root=tmp_path_factory.mktemp("local-files"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class S3Server:
    """An S3-compatible server (moto) on loopback, with a boto3 client for the tests' uploads."""

    KEY, SECRET = "test-access-key", "test-secret-key"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.KEY,
                            aws_secret_access_key=self.SECRET, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def ls_client(label_studio: LabelStudioServer) -> Iterator[LabelStudioClient]:
    with LabelStudioClient(label_studio.url, label_studio.token) as client:
        yield client


@pytest.fixture
def digits_project(ls_client: LabelStudioClient, request: pytest.FixtureRequest) -> int:
    """A fresh, empty project with the digits image-classification config, named after the test."""
    return ls_client.create_project(f"digits {request.node.name}"[:50], DIGITS_CONFIG)


def digits_pngs(n: int, seed: int = 0) -> tuple[list[tuple[str, bytes]], np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(seed).permutation(len(d.target))[:n]
    files = []
    for j, i in enumerate(idx):
        buf = io.BytesIO()
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
        files.append((f"digit{j:04d}.png", buf.getvalue()))
    return files, d.target[idx]


class Backend:
    """The FastAPI app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("backend did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def wait_for(check: Callable[[], object], timeout: float = 180, every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")
