"""Resolve task data values (URLs, uploads, data: URIs, number lists) to arrays, safely.

Only the Label Studio host and hosts in ``DATA_ALLOWED_HOSTS`` are fetched from, checked
before any connection and again on every redirect, so the backend never becomes a proxy
into the network. The API key goes to the Label Studio host only. Decoded arrays are
cached on disk so a retrain does not download again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx
import numpy as np

MAX_PIXELS = 50_000_000


class TaskDataError(ValueError):
    """A task's data cannot be used; the message says why (never containing the API key)."""


def decode_image(data: bytes, mode: str = "L", size: int | None = None) -> np.ndarray:
    """Decode image bytes to float32 ``(C, H, W)`` in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise TaskDataError(f"image of {img.width}x{img.height} pixels is too large")
            img.load()
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except TaskDataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise TaskDataError(f"not a readable image ({type(e).__name__}: {e})") from None
    return arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))


def decode_vector(value: object) -> np.ndarray:
    """A list of numbers (or a JSON string of one) to a float32 vector."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TaskDataError("vector data is a string that is not a JSON list of numbers") from None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise TaskDataError("vector data must be a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise TaskDataError("vector data must be a non-empty flat list of finite numbers")
    return arr


def _is_jwt(key: str) -> bool:
    return key.count(".") == 2 and len(key) > 40


class DataFetcher:
    def __init__(self, label_studio_url: str, api_key: str | None, allowed_hosts: Sequence[str] = (),
                 cache_dir: Path | None = None, timeout: float = 10.0, max_bytes: int = 20_000_000) -> None:
        self.base = label_studio_url.rstrip("/") + "/"
        ls = urlsplit(self.base)
        self.ls_origin = (ls.hostname, ls.port or (443 if ls.scheme == "https" else 80))
        self.api_key = api_key
        self.allowed = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._access: tuple[str, float] | None = None

    def _origin(self, url: str) -> tuple[str, int, str]:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise TaskDataError(f"refused URL scheme {u.scheme or '(none)'!r}: only http(s) is fetched")
        return u.hostname.lower(), u.port or (443 if u.scheme == "https" else 80), u.scheme

    def check_url(self, url: str) -> bool:
        """Raise unless ``url`` may be fetched; returns whether it is the Label Studio host."""
        host, port, _ = self._origin(url)
        if (host, port) == self.ls_origin:
            return True
        if host in self.allowed or f"{host}:{port}" in self.allowed:
            return False
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except OSError:
            raise TaskDataError(f"refused {host}: not the Label Studio host and not in DATA_ALLOWED_HOSTS") from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if not ip.is_global:
                raise TaskDataError(f"refused {host}:{port}: private, loopback or link-local address")
        raise TaskDataError(f"refused {host}: not the Label Studio host and not in DATA_ALLOWED_HOSTS")

    def _auth(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if not _is_jwt(self.api_key):
            return {"Authorization": f"Token {self.api_key}"}
        if self._access is None or self._access[1] < time.monotonic():
            try:
                r = httpx.post(urljoin(self.base, "api/token/refresh/"), json={"refresh": self.api_key},
                               timeout=self.timeout)
                r.raise_for_status()
                self._access = (r.json()["access"], time.monotonic() + 240)
            except (httpx.HTTPError, KeyError, ValueError):
                raise TaskDataError("could not exchange the personal access token for an access token") from None
        return {"Authorization": f"Bearer {self._access[0]}"}

    def fetch_bytes(self, ref: str) -> bytes:
        if not isinstance(ref, str) or not ref:
            raise TaskDataError("task data value is not a URL or path")
        if ref.startswith("data:"):
            head, _, payload = ref.partition(",")
            try:
                data = base64.b64decode(payload, validate=True) if head.endswith(";base64") \
                    else unquote_to_bytes(payload)
            except (binascii.Error, ValueError):
                raise TaskDataError("data: URI is not valid base64") from None
            if len(data) > self.max_bytes:
                raise TaskDataError(f"data: URI holds more than {self.max_bytes} bytes")
            return data
        url = urljoin(self.base, ref.lstrip("/")) if ref.startswith("/") else ref
        for _ in range(4):
            to_ls = self.check_url(url)
            headers = self._auth() if to_ls else {}
            try:
                with httpx.stream("GET", url, headers=headers, timeout=self.timeout, follow_redirects=False) as r:
                    if r.is_redirect:
                        url = urljoin(url, r.headers.get("location", ""))
                        continue
                    if r.status_code != 200:
                        raise TaskDataError(f"GET {urlsplit(url).path} answered HTTP {r.status_code}")
                    declared = int(r.headers.get("content-length") or 0)
                    if declared > self.max_bytes:
                        raise TaskDataError(f"file of {declared} bytes exceeds the {self.max_bytes}-byte cap")
                    buf = bytearray()
                    for chunk in r.iter_bytes():
                        buf += chunk
                        if len(buf) > self.max_bytes:
                            raise TaskDataError(f"file exceeds the {self.max_bytes}-byte cap")
                    return bytes(buf)
            except httpx.HTTPError as e:
                raise TaskDataError(f"could not fetch {urlsplit(url).path}: {type(e).__name__}") from None
        raise TaskDataError("too many redirects")

    def _cache_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"

    def load_item(self, value: object, kind: str, mode: str = "L", size: int | None = None) -> np.ndarray:
        if kind == "vector":
            return decode_vector(value)
        if not isinstance(value, str):
            raise TaskDataError("image data must be a URL, a path or a data: URI")
        path = self._cache_path(f"{value}|{mode}|{size}")
        if path is not None and path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        arr = decode_image(self.fetch_bytes(value), mode, size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
        return arr
