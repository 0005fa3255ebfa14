"""Task data fetching: SSRF guard, redirects, size and time caps, auth, decoding and the disk cache.

A tiny HTTP server on 127.0.0.1 plays the Label Studio host; a second one plays "another host".
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from connectors.task_data import DataFetcher, TaskDataError, decode_image, decode_vector

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "label-studio-1.23.2-requests.jsonl"
LEGACY_KEY = "0123456789abcdef0123456789abcdef01234567"


def _b64url(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


PAT = f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url({'token_type': 'refresh', 'exp': 4102444800})}.c2ln"


def _png(w: int = 8, h: int = 6, mode: str = "L", value: int = 200) -> bytes:
    buf = io.BytesIO()
    color = value if mode in ("L", "I;16") else (value, 0, 255 - value)
    Image.new(mode, (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _recorded_data_uris() -> list[str]:
    uris = []
    for line in FIXTURES.read_text().splitlines():
        body = json.loads(line).get("body") or {}
        for task in body.get("annotations", []) if isinstance(body.get("annotations"), list) else []:
            image = (task.get("data") or {}).get("image", "")
            if image.startswith("data:"):
                uris.append(image)
    assert uris, "the fixture should hold data: URIs"
    return uris


class _Server:
    """Records every request; ``routes`` maps a path (without query) to a handler."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                server.hits.append((self.command, self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def log_message(self, *args: object) -> None:
                pass

        Handler.do_GET = Handler.do_POST = Handler._handle  # type: ignore[attr-defined]

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def paths(self, method: str = "GET") -> list[str]:
        return [p for m, p, _ in self.hits if m == method]

    def auth(self, path: str) -> list[str | None]:
        return [h.get("Authorization") for _, p, h in self.hits if p.split("?", 1)[0] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(body: bytes, status: int = 200, content_length: bool = True,
          headers: dict[str, str] | None = None) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if content_length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return route


def _redirect(location: str, status: int = 302) -> Callable[[BaseHTTPRequestHandler], None]:
    return _send(b"", status, headers={"Location": location})


@pytest.fixture
def ls() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every TCP connection attempt; only the test servers on 127.0.0.1 are really reached."""
    seen: list[tuple] = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        seen.append(address)
        if address[0] not in ("127.0.0.1", "localhost"):
            raise OSError("test network: only 127.0.0.1 is reachable")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return seen


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve made-up names; each lookup pops the next answer (the last one repeats)."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            asked.append(host)
            queue = answers[host]
            ip = queue.pop(0) if len(queue) > 1 else queue[0]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


# ---- SSRF guard -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{other_port}/x.png",        # loopback, other port than Label Studio's
    "http://localhost:{ls_port}/x.png",           # same port but another host name than the configured one
    "http://169.254.169.254/latest/meta-data/",   # cloud metadata (link-local)
    "http://10.0.0.5/a.png",
    "http://192.168.1.1/a.png",
    "http://[::1]:8080/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://0.0.0.0:{ls_port}/a.png",
    "http://public.example/a.png",                # public, but not allowlisted
    "https://127.0.0.1:{ls_port}/x.png",          # right host:port, wrong scheme: no token over another scheme
    "file:///etc/passwd",
    "ftp://public.example/a.png",
    "gopher://127.0.0.1:{ls_port}/_",
    "//public.example/a.png",
    "http://user:pw@127.0.0.1:{ls_port}/x.png",
    "s3://bucket/key.png",
    "imgs/a.png",
])
def test_refused_before_any_connection(ls: _Server, connections: list, monkeypatch, url: str) -> None:
    _fake_dns(monkeypatch, {"public.example": ["93.184.216.34"]})
    f = DataFetcher(ls.url, LEGACY_KEY)
    with pytest.raises(TaskDataError) as err:
        f.fetch_bytes(url.format(ls_port=ls.port, other_port=ls.port + 1))
    assert connections == []
    assert ls.hits == []
    assert LEGACY_KEY not in str(err.value)


def test_wildcard_allows_public_hosts_only_and_connects_to_the_vetted_address(ls, connections, monkeypatch) -> None:
    _fake_dns(monkeypatch, {"public.example": ["93.184.216.34"], "intranet.example": ["10.1.2.3"]})
    f = DataFetcher(ls.url, LEGACY_KEY, allowed_hosts=["*"])
    with pytest.raises(TaskDataError, match="non-public"):
        f.fetch_bytes("http://intranet.example/a.png")
    with pytest.raises(TaskDataError, match=r"169\.254"):
        f.fetch_bytes("http://169.254.169.254/latest/meta-data/")
    assert connections == []
    with pytest.raises(TaskDataError, match="could not fetch"):
        f.fetch_bytes("http://public.example/a.png")  # the fake network refuses it, but it was attempted
    assert connections and connections[0][0] == "93.184.216.34"


def test_dns_rebinding_is_caught_at_connect_time(ls, connections, monkeypatch) -> None:
    asked = _fake_dns(monkeypatch, {"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    f = DataFetcher(ls.url, None, allowed_hosts=["*"])
    with pytest.raises(TaskDataError, match="non-public"):
        f.fetch_bytes(f"http://rebind.example:{ls.port}/x.png")
    assert asked == ["rebind.example", "rebind.example"]
    assert connections == []
    assert ls.hits == []


def test_allowlisted_host_port_and_host_entries(ls, other, connections) -> None:
    other.routes["/img.png"] = _send(_png())
    by_port = DataFetcher(ls.url, None, allowed_hosts=[f"127.0.0.1:{other.port}"])
    assert by_port.fetch_bytes(f"{other.url}/img.png") == _png()
    with pytest.raises(TaskDataError):
        by_port.fetch_bytes(f"http://127.0.0.1:{other.port + 1}/img.png")
    any_port = DataFetcher(ls.url, None, allowed_hosts=["LOCALHOST"])
    assert any_port.fetch_bytes(f"http://localhost:{other.port}/img.png") == _png()


# ---- redirects --------------------------------------------------------------------------------

def test_redirect_to_forbidden_host_is_refused(ls, connections) -> None:
    ls.routes["/data/upload/1/a.png"] = _redirect("http://169.254.169.254/latest/meta-data/")
    f = DataFetcher(ls.url, LEGACY_KEY)
    with pytest.raises(TaskDataError, match=r"169\.254\.169\.254"):
        f.fetch_bytes("/data/upload/1/a.png")
    assert {c[0] for c in connections} == {"127.0.0.1"}
    assert ls.paths() == ["/data/upload/1/a.png"]


def test_redirect_to_other_loopback_port_is_refused(ls, other, connections) -> None:
    other.routes["/secret"] = _send(b"internal")
    ls.routes["/data/upload/1/a.png"] = _redirect(f"{other.url}/secret", 307)
    with pytest.raises(TaskDataError, match="not the Label Studio host"):
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes("/data/upload/1/a.png")
    assert other.hits == []


def test_relative_redirect_is_followed_on_the_same_host(ls) -> None:
    ls.routes["/data/upload/1/old.png"] = _redirect("/data/upload/1/new.png", 301)
    ls.routes["/data/upload/1/new.png"] = _send(_png())
    f = DataFetcher(ls.url, LEGACY_KEY)
    assert f.fetch_bytes("/data/upload/1/old.png") == _png()
    assert ls.auth("/data/upload/1/new.png") == [f"Token {LEGACY_KEY}"]


def test_at_most_three_redirects(ls) -> None:
    ls.routes["/data/loop"] = _redirect("/data/loop")
    with pytest.raises(TaskDataError, match="more than 3 redirects"):
        DataFetcher(ls.url, None).fetch_bytes("/data/loop")
    assert ls.paths() == ["/data/loop"] * 4


# ---- auth -------------------------------------------------------------------------------------

def test_legacy_token_goes_to_label_studio_only(ls, other) -> None:
    ls.routes["/data/upload/1/a.png"] = _send(_png())
    ls.routes["/data/upload/1/moved.png"] = _redirect(f"{other.url}/img.png")
    other.routes["/img.png"] = _send(_png())
    f = DataFetcher(ls.url, LEGACY_KEY, allowed_hosts=[f"127.0.0.1:{other.port}"])
    f.fetch_bytes("/data/upload/1/a.png")
    f.fetch_bytes("/data/upload/1/moved.png")
    f.fetch_bytes(f"{other.url}/img.png")
    assert ls.auth("/data/upload/1/a.png") == [f"Token {LEGACY_KEY}"]
    assert ls.auth("/data/upload/1/moved.png") == [f"Token {LEGACY_KEY}"]
    assert other.auth("/img.png") == [None, None]
    assert not any(LEGACY_KEY in json.dumps(h) for _, _, h in other.hits)


def test_personal_access_token_is_exchanged_once_and_sent_as_bearer(ls) -> None:
    ls.routes["/api/token/refresh/"] = _send(json.dumps({"access": "access-1"}).encode(),
                                             headers={"Content-Type": "application/json"})
    ls.routes["/data/local-files/"] = _send(_png())
    f = DataFetcher(ls.url, PAT)
    f.fetch_bytes("/data/local-files/?d=files/imgs/img00.png")
    f.fetch_bytes("/data/local-files/?d=files/imgs/img01.png")
    assert ls.paths("POST") == ["/api/token/refresh/"]
    assert ls.auth("/data/local-files/") == ["Bearer access-1", "Bearer access-1"]
    assert ls.paths() == ["/data/local-files/?d=files/imgs/img00.png", "/data/local-files/?d=files/imgs/img01.png"]


def test_expired_access_token_is_refreshed_once_on_401(ls) -> None:
    issued: list[str] = []

    def refresh(h: BaseHTTPRequestHandler) -> None:
        issued.append(f"access-{len(issued) + 1}")
        _send(json.dumps({"access": issued[-1]}).encode())(h)

    def protected(h: BaseHTTPRequestHandler) -> None:
        ok = h.headers.get("Authorization") == "Bearer access-2"
        _send(_png() if ok else b"{}", 200 if ok else 401)(h)

    ls.routes["/api/token/refresh/"] = refresh
    ls.routes["/data/upload/1/a.png"] = protected
    assert DataFetcher(ls.url, PAT).fetch_bytes("/data/upload/1/a.png") == _png()
    assert issued == ["access-1", "access-2"]


def test_refused_token_errors_never_contain_the_key(ls) -> None:
    ls.routes["/api/token/refresh/"] = _send(b'{"detail": "token invalid"}', 401)
    with pytest.raises(TaskDataError, match="personal access token") as err:
        DataFetcher(ls.url, PAT).fetch_bytes("/data/upload/1/a.png")
    assert PAT not in str(err.value)
    ls.routes["/data/upload/1/a.png"] = _send(LEGACY_KEY.encode(), 401)
    with pytest.raises(TaskDataError, match="HTTP 401") as err:
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes("/data/upload/1/a.png")
    assert LEGACY_KEY not in str(err.value)


def test_a_token_exchange_label_studio_cannot_answer_now_is_temporary_and_not_retried_by_every_thread(ls) -> None:
    ls.routes["/api/token/refresh/"] = _send(b'{"detail": "busy"}', 503)
    f = DataFetcher(ls.url, PAT)
    for _ in range(3):
        with pytest.raises(TaskDataError, match="could not exchange") as err:
            f.fetch_bytes("/data/upload/1/a.png")
        assert err.value.temporary and "revoked" not in str(err.value)
    assert ls.paths("POST") == ["/api/token/refresh/"], "one exchange, the next tries fail at once"
    with pytest.raises(TaskDataError, match="could not reach") as err:
        DataFetcher("http://127.0.0.1:1", PAT).fetch_bytes("/data/upload/1/a.png")
    assert err.value.temporary, "Label Studio restarting: a later try may meet it"
    ls.routes["/api/token/refresh/"] = _send(b'{"detail": "token invalid"}', 401)
    with pytest.raises(TaskDataError, match="revoked") as err:
        DataFetcher(ls.url, PAT).fetch_bytes("/data/upload/1/a.png")
    assert not err.value.temporary


def test_local_files_404_explains_local_storage(ls) -> None:
    with pytest.raises(TaskDataError, match="Local Storage"):
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes("/data/local-files/?d=files/x.png")


def test_label_studio_under_a_path_prefix(ls) -> None:
    ls.routes["/ls/data/upload/1/a.png"] = _send(_png())
    f = DataFetcher(f"{ls.url}/ls/", LEGACY_KEY)
    assert f.fetch_bytes("/data/upload/1/a.png") == _png()
    assert f.fetch_bytes("/ls/data/upload/1/a.png") == _png()


# ---- size and time caps -----------------------------------------------------------------------

def test_declared_size_over_cap_is_refused_without_reading(ls) -> None:
    ls.routes["/data/big"] = _send(b"x" * 5000)
    with pytest.raises(TaskDataError, match="1000-byte limit"):
        DataFetcher(ls.url, None, max_bytes=1000).fetch_bytes("/data/big")


def test_streamed_size_over_cap_stops_reading(ls) -> None:
    sent: list[int] = []

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(2000):
            h.wfile.write(b"y" * 1024)
            sent.append(1024)

    ls.routes["/data/stream"] = endless
    started = time.monotonic()
    with pytest.raises(TaskDataError, match="over the 10000-byte limit"):
        DataFetcher(ls.url, None, max_bytes=10_000).fetch_bytes("/data/stream")
    assert time.monotonic() - started < 5


def test_slow_server_hits_the_timeout(ls) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        _send(b"late")(h)

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(30):
            h.wfile.write(b"z")
            h.wfile.flush()
            time.sleep(0.05)

    ls.routes["/data/slow"] = slow
    ls.routes["/data/drip"] = drip
    f = DataFetcher(ls.url, None, timeout=0.4)
    for path in ("/data/slow", "/data/drip"):
        started = time.monotonic()
        with pytest.raises(TaskDataError, match="timed out"):
            f.fetch_bytes(path)
        assert time.monotonic() - started < 1.2


def test_http_error_status(ls) -> None:
    ls.routes["/data/gone"] = _send(b"", 500)
    with pytest.raises(TaskDataError, match="HTTP 500"):
        DataFetcher(ls.url, None).fetch_bytes("/data/gone")


# ---- data: URIs -------------------------------------------------------------------------------

def test_recorded_data_uris_decode(connections) -> None:
    f = DataFetcher("http://localhost:18080", LEGACY_KEY)
    for uri in _recorded_data_uris():
        arr = decode_image(f.fetch_bytes(uri))
        assert arr.shape == (1, 16, 16) and arr.dtype == np.float32
        assert decode_image(f.fetch_bytes(uri), mode="RGB", size=8).shape == (3, 8, 8)
    assert connections == []


def test_data_uri_variants_and_cap() -> None:
    f = DataFetcher("http://localhost:18080", None, max_bytes=100)
    assert f.fetch_bytes("data:text/plain,hello%20world") == b"hello world"
    assert f.fetch_bytes("data:;base64,aGVs\nbG8=") == b"hello"
    with pytest.raises(TaskDataError, match="not valid base64"):
        f.fetch_bytes("data:image/png;base64,!!!notbase64")
    with pytest.raises(TaskDataError, match="100-byte limit"):
        f.fetch_bytes("data:application/octet-stream;base64," + base64.b64encode(b"x" * 200).decode())
    with pytest.raises(TaskDataError, match="no ','"):
        f.fetch_bytes("data:image/png;base64")


# ---- decoding ---------------------------------------------------------------------------------

def test_decode_image_shapes_and_range() -> None:
    grey = decode_image(_png(8, 6, "L", 255))
    assert grey.shape == (1, 6, 8) and grey.dtype == np.float32
    assert np.allclose(grey, 1.0)
    rgb = decode_image(_png(8, 6, "RGB", 51), mode="RGB", size=4)
    assert rgb.shape == (3, 4, 4)
    assert np.allclose(rgb[0], 0.2) and np.allclose(rgb[1], 0.0) and np.allclose(rgb[2], 204 / 255)
    assert decode_image(_png(8, 6, "RGB"), mode="L").shape == (1, 6, 8)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert np.allclose(out[0, 0], [0.0, 0.5, 1.0], atol=0.01)


@pytest.mark.parametrize(("bits", "expected"), [(None, [0, 7, 15, 255]), (16, [0, 7, 15, 255]),
                                                (12, [0, 127, 255, 255])])
def test_a_bit_depth_spreads_twelve_bit_values_over_the_grey_range(bits, expected) -> None:
    """Microscopes store 0..4095 in 16-bit files: read as 16-bit, the whole picture is 16 grey levels."""
    values = np.array([[0, 2048, 4095, 65535]], dtype=np.uint16)  # the last past 12 bits: clipped
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    out = decode_image(buf.getvalue(), bits=bits)
    np.testing.assert_array_equal(np.rint(out[0, 0] * 255).astype(int), expected)


def test_a_bit_depth_leaves_eight_bit_images_alone() -> None:
    assert np.array_equal(decode_image(_png(8, 6, "L", 200), bits=12), decode_image(_png(8, 6, "L", 200)))


@pytest.mark.parametrize("data", [
    _png(64, 64)[:60],                      # truncated inside the pixel data
    _png(64, 64)[:-20],                     # lost its end
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,    # a PNG signature and garbage
    b"GIF89a not really",
    b"hello, not an image",
    b"",
])
def test_corrupt_or_truncated_images(data: bytes) -> None:
    with pytest.raises(TaskDataError):
        decode_image(data)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 20000])
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    with pytest.raises(TaskDataError, match=r"pixel"):
        decode_image(bomb)


def test_decode_vector() -> None:
    assert decode_vector([1, 2.5, -3]).tolist() == [1.0, 2.5, -3.0]
    out = decode_vector("[0.5, 1e-3]")
    assert out.dtype == np.float32 and out.shape == (2,)
    assert decode_vector(np.arange(3, dtype=np.int64)).dtype == np.float32


@pytest.mark.parametrize("bad", [
    [], [[1, 2], [3, 4]], ["1", "2"], [True, False], [1, None], "not json", "{\"a\": 1}", "[1, NaN]",
    [1e39], [float("inf")], {"a": 1}, 3.0, None, b"[1,2]", np.array(["a"]),
])
def test_decode_vector_refuses(bad) -> None:
    with pytest.raises(TaskDataError):
        decode_vector(bad)


@pytest.mark.parametrize("uri", ["s3://bucket/photos/a b+c.png", "gs://b/x.png", "azure-blob://c/d/e.png"])
def test_raw_cloud_uris_are_resolved_through_label_studio_with_the_task_id(ls, uri: str) -> None:
    ls.routes["/tasks/7/resolve/"] = _send(_png())
    f = DataFetcher(ls.url, LEGACY_KEY)
    assert f.fetch_bytes(uri, task_id=7) == _png()
    path = ls.paths()[-1]
    fileuri = parse_qs(urlsplit(path).query)["fileuri"][0]
    assert base64.b64decode(fileuri).decode() == uri, "the query carries the URI exactly (+ and / survive)"
    assert ls.auth("/tasks/7/resolve/") == [f"Token {LEGACY_KEY}"]
    assert decode_image(f.fetch_bytes(uri, task_id=7)).shape == (1, 6, 8)


@pytest.mark.parametrize(("uri", "storage"), [("s3://b/k.png", "S3"), ("gs://b/k.png", "GCS"),
                                               ("azure-blob://c/k.png", "Azure Blob")])
def test_a_storage_label_studio_cannot_serve_is_named(ls, uri: str, storage: str) -> None:
    ls.routes["/tasks/3/resolve/"] = _send(b"no storage", status=404)
    with pytest.raises(TaskDataError, match=f"could not serve this {storage} object.*{storage} import storage"):
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes(uri, task_id=3)


def test_large_jpegs_are_decoded_at_reduced_scale_to_the_same_picture() -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((1600, 1200), Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=95)
    drafted = decode_image(buf.getvalue(), "RGB", 32)
    with Image.open(io.BytesIO(buf.getvalue())) as full:
        reference = np.asarray(full.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR),
                               dtype=np.float32).transpose(2, 0, 1) / 255
    assert drafted.shape == (3, 32, 32)
    assert np.abs(drafted - reference).mean() < 0.03, "1/8-scale decoding gives the same 32x32 picture"


def test_exif_orientation_is_respected() -> None:
    from PIL import Image

    arr = np.zeros((20, 40), np.uint8)
    arr[:, :20] = 255  # left half white, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(buf.getvalue(), "L")
    assert out.shape == (1, 40, 20), "shown as a portrait"
    assert out[0, :20].mean() > 0.9 and out[0, 20:].mean() < 0.1, "the white half ends up on top"


def test_refusal_names_the_reason(ls) -> None:
    f = DataFetcher(ls.url, None)
    with pytest.raises(TaskDataError, match="private"):
        f.fetch_bytes("http://10.0.0.5/a.png")
    with pytest.raises(TaskDataError, match="only http"):
        f.fetch_bytes("file:///etc/passwd")
    with pytest.raises(TaskDataError, match="DATA_ALLOWED_HOSTS"):
        f.fetch_bytes(f"http://127.0.0.1:{ls.port + 1}/a.png")


def test_a_missing_object_behind_the_redirect_names_the_storage(ls, other) -> None:
    other.routes["/bucket/gone.png"] = _send(b"denied", status=403)
    ls.routes["/tasks/4/resolve/"] = _redirect(f"{other.url}/bucket/gone.png?X-Amz-Signature=abc", 303)
    with pytest.raises(TaskDataError, match=r"HTTP 403 \(the S3 object Label Studio redirected to"):
        DataFetcher(ls.url, LEGACY_KEY, [f"127.0.0.1:{other.port}"]).fetch_bytes("s3://bucket/gone.png", task_id=4)


def test_a_drip_of_header_bytes_cannot_hold_a_fetch_past_its_limit(ls) -> None:
    def drip_headers(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(60):  # a header byte every 0.1 s: each read is quick, the whole answer is not
            h.wfile.write(b"X")
            h.wfile.flush()
            time.sleep(0.1)

    ls.routes["/data/headers"] = drip_headers
    started = time.monotonic()
    with pytest.raises(TaskDataError, match="timed out") as e:
        DataFetcher(ls.url, None, timeout=0.5).fetch_bytes("/data/headers")
    assert time.monotonic() - started < 1.5 and e.value.temporary


def test_a_compressed_answer_is_refused_not_unpacked(ls) -> None:
    bomb = zlib.compress(b"\0" * 5_000_000)
    ls.routes["/data/bomb"] = _send(bomb, headers={"Content-Encoding": "deflate"})
    with pytest.raises(TaskDataError, match="Content-Encoding 'deflate'"):
        DataFetcher(ls.url, None, max_bytes=10_000).fetch_bytes("/data/bomb")
    assert ls.hits[-1][2].get("Accept-Encoding") == "identity", "it asks for the plain bytes"


@pytest.mark.parametrize("ref", ["http://[::1/x.png", "http://a\uff03@b/x.png"])
def test_a_url_the_standard_library_cannot_parse_is_a_task_data_error(ref: str) -> None:
    with pytest.raises(TaskDataError, match="unparsable URL"):
        DataFetcher("http://127.0.0.1:1", None).fetch_bytes(ref)


def test_a_redirect_to_an_unparsable_url_is_a_task_data_error(ls) -> None:
    ls.routes["/data/odd"] = _redirect("http://[::1/x.png")
    with pytest.raises(TaskDataError, match=r"unparsable URL|Invalid URL in location"):
        DataFetcher(ls.url, None).fetch_bytes("/data/odd")


def test_a_vector_nested_past_the_parser_is_a_task_data_error() -> None:
    with pytest.raises(TaskDataError, match="not a JSON list"):
        decode_vector("[" * 100_000)


def test_sixteen_bit_grey_scales_like_before_in_float32() -> None:
    values = np.array([[0, 257, 65535], [1000, 30000, 65534]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    arr = decode_image(buf.getvalue())
    np.testing.assert_array_equal(np.rint(arr[0] * 255).astype(int), (values.astype(np.float64) / 257).astype(int))



@pytest.mark.parametrize("path", ["/api/projects/1/export?exportType=JSON", "/projects/1/settings", "/tasks/7/",
                                  "/data/../api/projects/1/export?exportType=JSON", "/data/upload/../../api/users/",
                                  "/data/%2e%2e/api/users/", "/data/upload/%2E%2E/./x.png",
                                  "/data/upload/..%5c..%5capi/"])
def test_the_key_goes_to_label_studio_only_where_it_serves_task_data(ls, path: str) -> None:
    with pytest.raises(TaskDataError, match="only under /data/"):
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes(path)
    with pytest.raises(TaskDataError, match="only under /data/"):
        DataFetcher(ls.url, LEGACY_KEY).fetch_bytes(ls.url + path)
    assert ls.hits == [], "refused before any request"



@pytest.mark.parametrize("path", ["/tasks/7/presign/", "/projects/2/resolve/", "/projects/2/presign/"])
def test_label_studio_s_other_storage_resolvers_are_read(ls, path: str) -> None:
    ls.routes[path] = _send(b"object bytes")
    assert DataFetcher(ls.url, LEGACY_KEY).fetch_bytes(path + "?fileuri=czM6Ly9iL2sucG5n") == b"object bytes"


def test_fetches_on_several_threads_share_one_client(monkeypatch) -> None:
    import threading

    import connectors.task_data as task_data

    made, real = [], task_data.httpx.Client

    def slow_client(*a, **k):
        time.sleep(0.05)  # threads that all saw no client yet would each build one here
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(task_data.httpx, "Client", slow_client)
    fetcher = DataFetcher("http://127.0.0.1:1", "key")
    clients = []
    threads = [threading.Thread(target=lambda: clients.append(fetcher._http())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len({id(c) for c in clients}) == 1
    fetcher.close()


def test_a_read_after_close_fails_and_opens_no_client(ls, monkeypatch) -> None:
    import connectors.task_data as task_data

    ls.routes["/data/upload/1/a.png"] = _send(_png())
    fetcher = DataFetcher(ls.url, LEGACY_KEY)
    assert fetcher.fetch_bytes("/data/upload/1/a.png") == _png()
    fetcher.close()
    made = []
    monkeypatch.setattr(task_data.httpx, "Client", lambda *a, **k: made.append(1))
    with pytest.raises(TaskDataError, match="request that asked for it has ended"):
        fetcher.fetch_bytes("/data/upload/1/a.png")
    assert made == [], "a /predict read past its deadline would leave a client open"
