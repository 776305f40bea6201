"""Images and videos named in chat messages: data URIs decoded here, http(s) and file URLs handed to the fetcher
(vlserve.serving.media_fetch, the one place that reaches the network), everything size-limited; images decoded
with Pillow under limits.

Images are accepted by content, never by name or declared type: PNG, JPEG, WEBP, GIF (its first frame) and BMP.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from PIL import Image, UnidentifiedImageError

from vlserve.errors import InvalidRequest

Fetcher = Callable[[str], Awaitable[bytes]]
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

if Image.MAX_IMAGE_PIXELS is None:  # keep Pillow's decompression-bomb guard on, whatever imported us
    Image.MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    """The payload of a `data:[<mime>][;base64],<data>` URI, refusing more than `max_bytes` decoded bytes."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise InvalidRequest("data URI has no ',' before its payload; expected data:<mime>;base64,<data>")
    too_large = InvalidRequest(f"the data URI is larger than the media limit of {max_bytes} bytes")
    if header.endswith(";base64"):
        if len(payload) // 4 * 3 > max_bytes + 3:
            raise too_large
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"data URI payload is not valid base64: {exc}") from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise too_large
    if not data:
        raise InvalidRequest("the data URI is empty")
    return data


async def load_bytes(url: str, fetch: Fetcher, *, param: str, max_bytes: int) -> bytes:
    """The bytes a media URL names: a data URI (decoded here) or an http(s)/file URL (through `fetch`)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("data", "http", "https", "file"):
        raise InvalidRequest(f"{param} must be a data: URI or an http(s) URL (got {_short(url)})", param=param)
    try:
        data = decode_data_uri(url, max_bytes) if scheme == "data" else await fetch(url)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=param) from exc
    if not data:
        raise InvalidRequest(f"{param}: {_short(url)} is empty (0 bytes)", param=param)
    return data


def open_image(data: bytes, *, param: str, max_pixels: int) -> Image.Image:
    """Decode an image fully (so errors surface here, not in the engine), its first frame for an animation,
    converted to RGB. The size is checked from the header, before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if image.width * image.height > max_pixels:
            raise _too_many_pixels(param, max_pixels, f"{image.width}x{image.height} pixels")
        image.load()
        return image.convert("RGB")
    except UnidentifiedImageError:
        raise InvalidRequest(f"{param} is not a readable image (accepted: {', '.join(IMAGE_FORMATS)}, by content)",
                             param=param) from None
    except Image.DecompressionBombError:  # Pillow's own guard, for sizes known only while decoding
        raise _too_many_pixels(param, max_pixels, "too many pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"{param} is not a readable image ({exc})", param=param) from exc


def _too_many_pixels(param: str, max_pixels: int, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param} has {what}; this server accepts at most {max_pixels} pixels per image; send a "
                          "smaller image", param=param)  # fmt: skip


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
