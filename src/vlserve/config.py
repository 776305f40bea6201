"""The server's configuration: one pydantic model whose field descriptions document every setting.

The CLI takes its `vlserve serve` flags from these fields (help and defaults); `run_server(**fields)` accepts them
directly; the serving layer's limits (InputLimits, AdmissionLimits, the Ray host) take their defaults from them.
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
    # -- where models run -------------------------------------------------------------------------------------
    cluster: Literal["none", "ray"] = Field(
        default="none", description="none: models run in this server's process; ray: every model replica is a Ray "
                                    "actor on a Ray cluster (needs the cluster extra, which installs Ray).",
    )
    ray_address: str | None = Field(
        default=None, description="With cluster=ray: the cluster to join (HOST:PORT of `ray start --head`, or auto); "
                                  "unset: start a one-machine cluster on loopback.",
    )
    placement_timeout_s: float = Field(
        default=60.0, gt=0, description="With cluster=ray: seconds a launch waits for Ray to place its replicas "
                                        "before it fails with the reason.",
    )
    ray_max_restarts: int = Field(
        default=3, ge=0, description="With cluster=ray: times Ray restarts a replica whose process died.",
    )
    ray_cpus_per_replica: float = Field(
        default=1.0, gt=0, description="With cluster=ray: CPUs each replica reserves (also its torch threads).",
    )
    # -- who may call ----------------------------------------------------------------------------------------
    api_keys: tuple[str, ...] = Field(
        default=(), repr=False,
        description="Keys accepted as `Authorization: Bearer KEY`; when set every route but /health, the "
                    "xinference auth probe and the web UI's files needs one. Empty: no authentication.",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(), description="Browser origins allowed to call the API cross-site (e.g. https://app.example); "
                                "empty: none (same-origin only).",
    )
    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Largest request body, in bytes.")
    # -- media named in chat messages ---------------------------------------------------------------------------
    media_fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to fetch an image or video given as an http(s) URL."
    )
    media_max_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0,
        description="Largest image or video (http(s) URL, data URI or allowed file), in bytes.",
    )
    allow_private_media: bool = Field(
        default=False, description="Fetch media from loopback, private, link-local and other non-public addresses "
                                   "(refused by default: a URL could reach this machine's or its network's services).",
    )
    media_allow_domains: tuple[str, ...] = Field(
        default=(), description="If set, http(s) media only from these domains and their subdomains.",
    )
    media_allow_dirs: tuple[str, ...] = Field(
        default=(), description="Local folders `file://` media may be read from; empty: file:// is refused.",
    )
    max_image_pixels: int = Field(default=50_000_000, gt=0, description="Most pixels (width x height) per image.")
    max_images_per_request: int = Field(default=32, gt=0, description="Most images and videos in one request.")
    max_total_tiles: int = Field(
        default=64, gt=0, description="Most 448x448 tiles per request (all images and video frames together).",
    )
    # -- load ----------------------------------------------------------------------------------------------------
    max_concurrent_requests: int = Field(
        default=64, gt=0, description="Requests generating at once per model (a launch may set its own).",
    )
    max_queued_requests: int = Field(
        default=256, ge=0, description="Requests waiting per model beyond those; more are refused with 503 and "
                                       "Retry-After (a launch may set its own).",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM/SIGINT: seconds in-flight requests get to finish before the "
                                        "models are unloaded.",
    )
