"""The server's configuration: one pydantic model whose field descriptions document every setting.

The CLI maps its `vlserve serve` flags onto these fields; `run_server(**fields)` accepts them directly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(default=9997, ge=0, le=65535, description="Port to listen on (0: any free port).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Least severe log level.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line with the request id; text: for reading in a terminal."
    )
    media_fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to fetch an image or video given as an http(s) URL."
    )
    media_max_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest image or video fetched from an http(s) URL, in bytes."
    )
