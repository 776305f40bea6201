"""What both hub clients share: the file listing of one repository revision, and the DownloadError they raise."""

from __future__ import annotations

from dataclasses import dataclass

from vlserve.errors import DownloadError

HUB_LABELS = {"huggingface": "Hugging Face", "modelscope": "ModelScope"}


@dataclass(frozen=True)
class RemoteSnapshot:
    """The files of one repository revision, as the hub lists them before the download starts."""

    revision: str  # what is downloaded: a commit sha on Hugging Face, a branch or tag name on ModelScope
    files: dict[str, int | None]  # path inside the repo -> size in bytes (None: the hub did not say)
    endpoint: str  # the site that listed them, and that the files are fetched from

    @property
    def total_bytes(self) -> int:
        return sum(size or 0 for size in self.files.values())


def _cause(exc: BaseException) -> str:
    """The first line of the client's message (they run to several lines), with the HTTP status if it has one."""
    text = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    return text[:300]


def download_error(
    hub: str, repo_id: str, endpoint: str, exc: BaseException, reason: str | None = None
) -> DownloadError:
    """A DownloadError naming the hub, the repo and what the user can do about it; `reason` replaces the client's
    own wording where the client module knows a clearer one."""
    other = next(name for name in HUB_LABELS if name != hub)
    return DownloadError(
        f"could not download {repo_id} from {HUB_LABELS[hub]} ({endpoint}): {reason or _cause(exc)}. "
        f"Check the network connection to {endpoint}, try the other hub with --download-hub {other}, "
        "or pass --model-path with a local copy of the model.",
        param="download_hub",
    )
