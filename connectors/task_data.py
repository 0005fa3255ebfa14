"""Resolve task data values (uploads, URLs, data: URIs, number lists) to arrays, safely.

Task data is written by whoever can import tasks, so every URL in it is untrusted. A URL is
fetched only when its scheme is http(s) and either its ``host:port`` is the Label Studio
host's, or its host is listed in ``allowed_hosts`` (``DATA_ALLOWED_HOSTS``; entries are
``host`` or ``host:port``). The entry ``*`` additionally allows any host whose addresses are
all public (never loopback, private, link-local or reserved). The check runs before any
connection, again on every redirect (followed by hand, at most three), and once more inside
the connection layer, which connects only to an address it has just vetted, so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot reach an internal
address.

The API key goes to the Label Studio host only. A legacy token is sent as ``Token <key>``; a
personal access token (a JWT) is exchanged at ``/api/token/refresh/`` for a short-lived access
token sent as ``Bearer`` (Label Studio's access tokens live 5 minutes; we reuse one for 4).

Nothing is cached here: the service keeps decoded items in its project mirror
(:mod:`service.mirror`), so a retrain never downloads an item again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import json
import logging
import numbers
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, unquote, unquote_to_bytes, urljoin, urlsplit

import httpcore
import httpx
import numpy as np

log = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000
EXCHANGE_RETRY_SECONDS = 5.0  # a failed token exchange is not tried again sooner by the other fetching threads
MAX_REDIRECTS = 3
ACCESS_TOKEN_TTL_SECONDS = 240.0
REDIRECT_CODES = {301, 302, 303, 307, 308}
CLOUD_SCHEMES = {"s3", "gs", "gcs", "azure-blob", "azure", "abfs", "wasb", "wasbs"}
_RESOLVE_PATH = re.compile(r"/(tasks|projects)/\d+/(resolve|presign)/?")  # how Label Studio serves storage objects
_JWT_PART = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


class TaskDataError(ValueError):
    """A task's data cannot be used; the message says why and never contains the API key.

    ``temporary`` marks what a later try may not meet (a timeout, a dropped connection, HTTP
    408, 429 or 5xx), so a mirror tries the task again instead of writing it off.
    """

    def __init__(self, message: str, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


def temporary_status(status: int | None) -> bool:
    """An HTTP status a later try may not meet: a timeout, too many requests, or a server error."""
    return status is not None and (status >= 500 or status in (408, 429))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _parse_host_entry(entry: str) -> tuple[str, int | None] | None:
    """``host``, ``host:port`` or ``[v6]:port`` to (host, port or None for any port)."""
    entry = entry.strip()
    if not entry:
        return None
    if entry == "*":
        return ("*", None)
    parts = urlsplit(entry if "://" in entry else "//" + entry)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return _norm_host(parts.hostname), port


def _ip_is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or ip.is_unspecified)


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _public_addresses(host: str, port: int) -> list[str]:
    """Resolve ``host``; raise unless every address is public (one private answer is enough to refuse)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise TaskDataError(f"refused {host}: cannot resolve it ({e.__class__.__name__})") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        ip = _literal_ip(address)
        if ip is None or not _ip_is_public(ip):
            raise TaskDataError(f"refused {host}: it resolves to a non-public address ({address}); "
                                "add it to DATA_ALLOWED_HOSTS if it is meant to be reachable")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TaskDataError(f"refused {host}: it resolves to no address")
    return addresses


def _is_jwt(key: str) -> bool:
    """Personal access tokens are JWTs (``header.payload.signature``); legacy tokens are 40 hex chars."""
    parts = key.split(".")
    if len(parts) != 3 or not all(_JWT_PART.match(p) for p in parts):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


_DEADLINE = threading.local()  # the running fetch's deadline, in this thread: every socket wait stays within it


def _within(timeout: float | None) -> float | None:
    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the fetch's time is up")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the fetch's deadline, not a fresh timeout:
    a server that drips a byte at a time cannot hold a fetch past its limit."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _within(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _within(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _within(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects only to vetted addresses, closing the gap between our DNS check and the connection."""

    def __init__(self, is_trusted: Callable[[str, int], bool]) -> None:
        self._inner = httpcore.SyncBackend()
        self._is_trusted = is_trusted

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        kwargs = {"timeout": _within(timeout), "local_address": local_address, "socket_options": socket_options}
        if self._is_trusted(host, port):
            return _DeadlineStream(self._inner.connect_tcp(host, port, **kwargs))
        last: Exception | None = None
        for address in _public_addresses(host, port):
            try:
                return _DeadlineStream(self._inner.connect_tcp(address, port, **kwargs))
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for task data")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def is_inline(value: Any) -> bool:
    """Read without a request: a ``data:`` URI, or a value that is no reference at all (a vector, nothing)."""
    return not isinstance(value, str) or value.strip()[:5].lower() == "data:"


def _decode_data_uri(ref: str, max_bytes: int) -> bytes:
    head, sep, payload = ref[5:].partition(",")
    if not sep:
        raise TaskDataError("data: URI has no ',' separating its header from its data")
    if head.lower().endswith(";base64"):
        payload = re.sub(r"\s+", "", unquote(payload) if "%" in payload else payload)
        if len(payload) * 3 // 4 > max_bytes:
            raise TaskDataError(f"data: URI holds more than the {max_bytes}-byte limit")
        payload += "=" * (-len(payload) % 4)
        try:
            if "-" in payload or "_" in payload:
                return base64.urlsafe_b64decode(payload)
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise TaskDataError("data: URI is marked base64 but is not valid base64") from None
    data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise TaskDataError(f"data: URI holds more than the {max_bytes}-byte limit")
    return data


def _to_8bit(img: Any, bits: int | None = None) -> Any:
    """Scale 16/32-bit greyscale to 8 bits over its full range; PIL's ``convert`` would clip it.

    ``bits`` is the depth the values really use (12 for most microscopes and X-ray detectors, which
    store 0..4095 in 16-bit files): without it they are read as 16-bit and land in 16 grey levels.
    Pillow does not read PNG's ``sBIT``, and guessing per image would scale images unlike each other.
    """
    from PIL import Image

    if img.mode.startswith("I"):  # in integers, exactly: the top value of the depth must land on 255
        top = (1 << (bits or 16)) - 1
        arr = np.empty(img.size[::-1], np.uint32)  # scaled in place: a large scan stays affordable
        np.clip(np.asarray(img), 0, top, out=arr, casting="unsafe")
        arr *= 255
        arr //= top
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.array(img, dtype=np.float32)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr *= np.float32(255.0)
    else:
        return img
    np.nan_to_num(arr, copy=False)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "L")


STORAGE_NAMES = {"s3": "S3", "gs": "GCS", "gcs": "GCS", "azure-blob": "Azure Blob", "azure": "Azure Blob",
                 "abfs": "Azure Blob", "wasb": "Azure Blob", "wasbs": "Azure Blob"}


def _storage_of(resolve_url: str) -> str:
    """The storage kind named by a resolve URL's ``fileuri`` (S3, GCS, Azure Blob), for error messages."""
    try:
        raw = parse_qs(urlsplit(resolve_url).query).get("fileuri", [""])[0]
        scheme = urlsplit(base64.b64decode(raw).decode()).scheme.lower()
    except (ValueError, UnicodeDecodeError):
        return "cloud storage"
    return STORAGE_NAMES.get(scheme, "cloud storage")


def decode_image(data: bytes, mode: str = "L", size: int | None = None, reduced: bool = True,
                 bits: int | None = None) -> np.ndarray:
    """Decode image bytes to float32 ``(C, H, W)`` in [0, 1] (C=1 for "L", 3 for "RGB").

    ``bits`` is the depth of greyscale images stored with more than 8 bits (see :func:`_to_8bit`);
    values past it are clipped.

    With ``size``, a JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale that still
    covers ``size`` (``reduced=False``: full resolution, for comparison in the benchmarks).

    Anything PIL cannot fully decode (corrupt, truncated, not an image) and images over
    ``MAX_PIXELS`` (decompression bombs) raise :class:`TaskDataError` instead of PIL's zoo of errors.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, not {size}")
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise TaskDataError("image data is empty")
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise TaskDataError(f"image of {width}x{height} pixels exceeds the {MAX_PIXELS}-pixel limit")
            if width < 1 or height < 1:
                raise TaskDataError(f"image has no pixels ({width}x{height})")
            if reduced and size is not None and opened.format == "JPEG":
                # decode at a reduced scale (1/2, 1/4 or 1/8) that still covers the target side
                opened.draft(None, (size, size))
            opened.load()
            img = ImageOps.exif_transpose(opened) or opened
            img = _to_8bit(img, bits).convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    except TaskDataError:
        raise
    except Image.DecompressionBombError:
        raise TaskDataError("image has too many pixels (decompression bomb guard)") from None
    except Exception as e:
        raise TaskDataError(f"not a readable image ({type(e).__name__}: {str(e)[:200]})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def decode_vector(value: Any) -> np.ndarray:
    """A flat list of finite numbers (or a JSON string of one) to a float32 1-D array."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # "[[[[..." nests deeper than the parser goes
            raise TaskDataError("vector data is a string but not a JSON list of numbers") from None
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise TaskDataError(f"vector data has dtype {value.dtype}; numbers are needed")
        arr = value
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) for x in value):
            raise TaskDataError("vector data must be a flat list of numbers (found a non-number or a nested list)")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            raise TaskDataError("vector data holds a number that does not fit a float") from None
    else:
        raise TaskDataError(f"vector data must be a list of numbers, not {type(value).__name__}")
    if arr.ndim != 1 or arr.size == 0:
        raise TaskDataError(f"vector data must be a non-empty flat list (got shape {arr.shape})")
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise TaskDataError("vector data holds NaN, infinity or a number too large for float32")
    return out


class DataFetcher:
    """Fetches and decodes task data for one Label Studio instance (see the module docstring)."""

    def __init__(self, label_studio_url: str, api_key: str | None, allowed_hosts: Sequence[str] = (),
                 timeout: float = 10.0, max_bytes: int = 20_000_000) -> None:
        base = urlsplit((label_studio_url or "").strip())
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"Label Studio URL must be http(s)://host[:port], not {label_studio_url!r}")
        self._ls_scheme = base.scheme
        self._ls_host = _norm_host(base.hostname)
        self._ls_port = base.port or _default_port(base.scheme)
        self._ls_prefix = base.path.rstrip("/")
        self._ls_root = f"{base.scheme}://{base.netloc}"
        self._api_key = api_key or None
        self._pat = bool(self._api_key) and _is_jwt(self._api_key)
        entries = [_parse_host_entry(h) for h in (allowed_hosts or ()) if isinstance(h, str)]
        self._allow_public = ("*", None) in entries
        self._allowed = [e for e in entries if e is not None and e[0] != "*"]
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self._access: tuple[str, float] | None = None
        self._exchange_failed: tuple[TaskDataError, float] | None = None
        self._token_lock = threading.Lock()
        self._client_lock = threading.Lock()  # fetches run on several threads: one client, not one each
        self._client: httpx.Client | None = None
        self._closed = False

    # ---- policy ---------------------------------------------------------------------------------
    def _is_ls(self, scheme: str, host: str, port: int) -> bool:
        return (scheme, _norm_host(host), port) == (self._ls_scheme, self._ls_host, self._ls_port)

    def _is_allowlisted(self, host: str, port: int | None) -> bool:
        host = _norm_host(host)
        return any(h == host and (p is None or p == port) for h, p in self._allowed)

    def _trusted_connection(self, host: str, port: int | None) -> bool:
        """Connections to the Label Studio host and allowlisted hosts skip the address check."""
        port = port or self._ls_port
        return (_norm_host(host), port) == (self._ls_host, self._ls_port) or self._is_allowlisted(host, port)

    def check_url(self, url: str) -> bool:
        """Raise :class:`TaskDataError` unless ``url`` may be fetched; return whether it is Label Studio's."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TaskDataError(f"refused {self._shown(url)}: only http(s) URLs are fetched, not {scheme or 'none'!r}")
        if not parts.hostname:
            raise TaskDataError(f"refused {self._shown(url)}: the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise TaskDataError(f"refused {self._shown(url)}: URLs with credentials are not fetched")
        try:
            port = parts.port or _default_port(scheme)
        except ValueError:
            raise TaskDataError(f"refused {self._shown(url)}: invalid port") from None
        host = _norm_host(parts.hostname)
        if self._is_ls(scheme, host, port):
            return True
        if self._is_allowlisted(host, port):
            return False
        ip = _literal_ip(host)
        if ip is not None and not _ip_is_public(ip):
            raise TaskDataError(f"refused {host}:{port}: a loopback, private, link-local or reserved address that "
                                "is not the Label Studio host; add it to DATA_ALLOWED_HOSTS if it is meant to be")
        if self._allow_public:
            _public_addresses(host, port)
            return False
        raise TaskDataError(f"refused {host}:{port}: not the Label Studio host ({self._ls_host}:{self._ls_port}) "
                            "and not in DATA_ALLOWED_HOSTS")

    # ---- http -----------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._closed:  # a read that outlived its request: opening a client now would leave it open
                raise TaskDataError("not read: the request that asked for it has ended", temporary=True)
            if self._client is None:
                transport = httpx.HTTPTransport(retries=0)
                pool = getattr(transport, "_pool", None)
                if pool is not None and hasattr(pool, "_network_backend"):
                    pool._network_backend = _GuardedBackend(self._trusted_connection)
                else:
                    log.warning("httpx internals changed: task data fetches rely on the pre-connection URL check only")
                self._client = httpx.Client(transport=transport, follow_redirects=False, trust_env=False)
            return self._client

    def close(self) -> None:
        """Close the client for good: a read still running on another thread fails instead of opening a new one."""
        with self._client_lock:
            client, self._client, self._closed = self._client, None, True
        if client is not None:
            client.close()

    def __enter__(self) -> DataFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _scrub(self, text: str) -> str:
        for secret in (self._api_key, self._access[0] if self._access else None):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _shown(self, url: str) -> str:
        """A URL fit for messages: query strings of other hosts (presigned signatures) are dropped."""
        parts = urlsplit(url)
        try:
            ours = parts.hostname is not None and self._is_ls(parts.scheme, parts.hostname,
                                                               parts.port or _default_port(parts.scheme))
        except ValueError:
            ours = False
        shown = url if ours else f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        return self._scrub(shown if len(shown) <= 200 else shown[:197] + "...")

    def _auth_headers(self, refresh: bool = False) -> dict[str, str]:
        if not self._api_key:
            return {}
        if not self._pat:
            return {"Authorization": f"Token {self._api_key}"}
        with self._token_lock:
            if refresh or self._access is None or self._access[1] <= time.monotonic():
                failed = self._exchange_failed  # the fetching threads waiting here fail at once, not each in turn
                if failed is not None and time.monotonic() < failed[1] + EXCHANGE_RETRY_SECONDS:
                    raise TaskDataError(str(failed[0]), temporary=failed[0].temporary)
                try:
                    self._access = (self._exchange_pat(), time.monotonic() + ACCESS_TOKEN_TTL_SECONDS)
                except TaskDataError as e:
                    self._exchange_failed = (e, time.monotonic())
                    raise
                self._exchange_failed = None
            return {"Authorization": f"Bearer {self._access[0]}"}

    def _exchange_pat(self) -> str:
        url = f"{self._ls_root}{self._ls_prefix}/api/token/refresh/"
        try:
            r = self._http().post(url, json={"refresh": self._api_key}, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise TaskDataError(f"could not reach {self._shown(url)} to exchange the personal access token "
                                f"({type(e).__name__})", temporary=isinstance(e, httpx.TransportError)) from None
        if temporary_status(r.status_code):
            raise TaskDataError(f"Label Studio could not exchange the personal access token now (HTTP "
                                f"{r.status_code} from {self._shown(url)})", temporary=True)
        if r.status_code != 200:
            raise TaskDataError(f"Label Studio refused the personal access token (HTTP {r.status_code} from "
                                f"{self._shown(url)}); it may be revoked or belong to another server")
        try:
            access = r.json()["access"]
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not access:
            raise TaskDataError(f"{self._shown(url)} answered without an access token")
        return access

    def _absolute(self, ref: str) -> str:
        if ref.startswith("/") and not ref.startswith("//"):
            if self._ls_prefix and (ref == self._ls_prefix or ref.startswith(self._ls_prefix + "/")):
                return self._ls_root + ref
            return self._ls_root + self._ls_prefix + ref
        scheme = urlsplit(ref).scheme.lower() if ":" in ref else ""
        if scheme in ("http", "https"):
            return ref
        if scheme in CLOUD_SCHEMES:
            raise TaskDataError(f"{scheme}:// URLs are cloud-storage references that Label Studio resolves; "
                                "send the task with its id (or fetch it through the Label Studio API)")
        if ref.startswith("//"):
            raise TaskDataError("refused a protocol-relative URL (//host/...): give an http(s) URL")
        if scheme:
            raise TaskDataError(f"refused a {scheme}: URL; only http(s), /data/... paths and data: URIs are read")
        raise TaskDataError(f"{ref[:80]!r} is not a URL, a /data/... path or a data: URI")

    def fetch_bytes(self, ref: str, task_id: int | None = None) -> bytes:
        """The bytes behind a task data reference, within the host rules, ``timeout`` and ``max_bytes``.

        A raw cloud-storage URI (``s3://``, ``gs://``, ``azure-blob://``: what Label Studio
        sends to ``/predict``) is read through Label Studio's ``/tasks/<id>/resolve/`` with
        the backend's key, as Label Studio's own clients do; that needs the task id. A URL
        the standard library cannot parse (``http://[::1/x``, or a redirect to one) is a
        TaskDataError like any other refusal.
        """
        try:
            return self._fetch_bytes(ref, task_id)
        except TaskDataError:
            raise
        except ValueError as e:
            raise TaskDataError(f"refused an unparsable URL: {self._scrub(str(e))[:200]}") from None

    def _fetch_bytes(self, ref: str, task_id: int | None) -> bytes:
        if not isinstance(ref, str) or not ref.strip():
            raise TaskDataError("task data value is empty or not a string")
        ref = ref.strip()
        if is_inline(ref):
            return _decode_data_uri(ref, self.max_bytes)
        scheme = urlsplit(ref).scheme.lower() if ":" in ref else ""
        if scheme in CLOUD_SCHEMES and task_id is not None:
            ref = f"/tasks/{int(task_id)}/resolve/?fileuri={quote(base64.b64encode(ref.encode()).decode(), safe='')}"
        url = self._absolute(ref)
        resolved_from = url if "/resolve/?fileuri=" in url else None
        deadline = time.monotonic() + self.timeout
        refreshed = False
        redirects = 0
        while True:
            to_ls = self.check_url(url)
            if to_ls:
                self._check_ls_path(url)
            headers = self._auth_headers() if to_ls else {}
            status, body, location = self._get(url, headers, deadline)
            if status == 401 and to_ls and self._pat and not refreshed:
                refreshed = True
                self._auth_headers(refresh=True)
                continue
            if location is not None:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise TaskDataError(f"{self._shown(url)}: more than {MAX_REDIRECTS} redirects")
                url = urljoin(url, location)
                continue
            if body is not None:
                return body
            message = self._status_message(url, status, to_ls)
            if resolved_from is not None and url != resolved_from:
                storage = _storage_of(resolved_from)
                message += (f" (the {storage} object Label Studio redirected to: check that it exists and that the "
                            f"{storage} storage's credentials may read it)")
            raise TaskDataError(message, temporary=temporary_status(status))

    def _check_ls_path(self, url: str) -> None:
        """The key goes only where Label Studio serves task data: its files and the storage resolver.

        Any other path of Label Studio (an export, an admin page) would be requested as the key's
        owner by whoever can import a task naming it. A ``.`` or ``..`` segment (percent-encoded too) is
        refused: the client drops them before it sends, so ``/data/../api/...`` would reach the API.
        """
        path = urlsplit(url).path
        if self._ls_prefix and path.startswith(self._ls_prefix + "/"):
            path = path[len(self._ls_prefix):]
        dots = any(seg in (".", "..") for seg in unquote(path).replace("\\", "/").split("/"))
        if dots or not (path.startswith(("/data/", "/storage-data/")) or _RESOLVE_PATH.fullmatch(path)):
            raise TaskDataError(f"refused {self._shown(url)}: Label Studio is read only under /data/... (no . or .. "
                                "segments) and its storage resolvers (/tasks/<id>/resolve/, /presign/)")

    def _status_message(self, url: str, status: int, to_ls: bool) -> str:
        message = f"GET {self._shown(url)} answered HTTP {status}"
        if to_ls and status in (401, 403):
            message += (" (check LABEL_STUDIO_API_KEY: legacy tokens may be disabled in the organisation; "
                        "a personal access token works)")
        elif to_ls and status == 404 and "/data/local-files" in url:
            message += " (Label Studio serves /data/local-files/ only under a Local Storage that covers the path)"
        elif to_ls and "/resolve/" in url and status in (400, 404, 500):
            storage = _storage_of(url)
            message += (f" (Label Studio could not serve this {storage} object: the project needs a {storage} "
                        "import storage that covers it, with working credentials)")
        return message

    def _timed_out(self, url: str) -> TaskDataError:
        return TaskDataError(f"timed out after {self.timeout:g} s fetching {self._shown(url)}", temporary=True)

    def _get(self, url: str, headers: dict[str, str], deadline: float) -> tuple[int, bytes | None, str | None]:
        """One GET: (status, body if 2xx, Location if a redirect)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(url)
        log.debug("fetching %s", self._shown(url))
        _DEADLINE.at = deadline
        try:
            with self._http().stream("GET", url, headers={**headers, "Accept-Encoding": "identity"},
                                     timeout=remaining) as r:
                if r.status_code in REDIRECT_CODES:
                    location = r.headers.get("location")
                    if not location:
                        raise TaskDataError(f"{self._shown(url)} redirected without a Location header")
                    return r.status_code, None, location
                if not 200 <= r.status_code < 300:
                    return r.status_code, None, None
                encoding = r.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):  # a few compressed bytes can unpack to gigabytes
                    raise TaskDataError(f"{self._shown(url)} answered with Content-Encoding {encoding!r}; "
                                        "only uncompressed bodies are read")
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise TaskDataError(f"{self._shown(url)} is {int(declared)} bytes, over the "
                                        f"{self.max_bytes}-byte limit")
                body = bytearray()
                for chunk in r.iter_raw():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise TaskDataError(f"{self._shown(url)} is over the {self.max_bytes}-byte limit")
                    if time.monotonic() > deadline:
                        raise self._timed_out(url)
                return r.status_code, bytes(body), None
        except TaskDataError:
            raise
        except httpx.TimeoutException:
            raise self._timed_out(url) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            detail = self._scrub(str(e))[:200] or type(e).__name__
            raise TaskDataError(f"could not fetch {self._shown(url)}: {detail}",
                                temporary=isinstance(e, httpx.TransportError)) from None
        finally:
            _DEADLINE.at = None
