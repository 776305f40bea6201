"""Serve the web UI's static files: the page at /ui, its assets under /ui/static/, and / redirecting to /ui.

These routes return only files shipped with the package, never data, so they need no API key: everything the page
shows it fetches from the API with the key the user gives it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from vlserve.errors import NotFound

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The page may load only its own files: no third-party scripts, styles, fonts or frames.
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": _CSP}

router = APIRouter(include_in_schema=False, tags=["ui"])


def _file(relative: str) -> FileResponse:
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in _TYPES:
        raise NotFound(f"no UI file {relative!r}; the page is at /ui")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.api_route("/ui", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return _file("index.html")


@router.api_route("/ui/static/{relative:path}", methods=["GET", "HEAD"])
async def asset(relative: str) -> FileResponse:
    return _file(relative)
