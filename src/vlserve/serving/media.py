"""Images and videos named in chat messages: data URIs and http(s) URLs, fetched with limits and decoded.

`fetch_url` is the one function that reaches the network; the chat service takes it as a parameter so a stricter
fetcher (an SSRF guard, an allow-list) can replace it without touching anything else.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx
from PIL import Image, UnidentifiedImageError

from vlserve.errors import InvalidRequest

Fetcher = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class FetchLimits:
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024


async def fetch_url(url: str, limits: FetchLimits = FetchLimits()) -> bytes:
    """GET an http(s) URL, refusing bodies over `limits.max_bytes` (counted while streaming, not trusted from headers)."""
    try:
        async with httpx.AsyncClient(timeout=limits.timeout_s, follow_redirects=True, max_redirects=3) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"fetching {_short(url)} answered HTTP {response.status_code}")
                return await _read_limited(response, limits.max_bytes, url)
    except httpx.TimeoutException as exc:
        raise InvalidRequest(f"fetching {_short(url)} timed out after {limits.timeout_s:g}s") from exc
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"fetching {_short(url)} failed: {exc}") from exc


async def _read_limited(response: httpx.Response, max_bytes: int, url: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise InvalidRequest(f"{_short(url)} is larger than the media limit of {max_bytes} bytes")
    return bytes(body)


def decode_data_uri(url: str) -> bytes:
    """The payload of a `data:[<mime>][;base64],<data>` URI."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise InvalidRequest("data URI has no ',' before its payload; expected data:<mime>;base64,<data>")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"data URI payload is not valid base64: {exc}") from exc
    return unquote_to_bytes(payload)


async def load_bytes(url: str, fetch: Fetcher, *, param: str) -> bytes:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        try:
            return decode_data_uri(url)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=param) from exc
    if scheme in ("http", "https"):
        try:
            return await fetch(url)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=param) from exc
    raise InvalidRequest(f"{param} must be a data: URI or an http(s) URL (got {_short(url)})", param=param)


def open_image(data: bytes, *, param: str) -> Image.Image:
    """Decode an image fully (so errors surface here, not in the engine) and convert it to RGB."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"{param} is not a readable image ({exc})", param=param) from exc
    return image.convert("RGB")


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
