"""Download progress as a fraction, for the server's "downloading" status and the CLI's progress bar.

Both hub clients write partial files inside the target folder (Hugging Face under `.cache/huggingface/download/`,
ModelScope as `<file>.incomplete`), so bytes on disk over the listed total is a hub-neutral measure. It is coarse
(polled, and it counts a resumed partial file from the start), which is all a status line needs. A poll can also
miss a file the client is moving from its partial name to its final one, so the reported fraction only ever rises:
a smaller reading than the last one reported is not passed on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

# Called with the fraction done, 0.0 to 1.0 (1.0 once the download is verified). While a download runs it is called
# from a background thread, so it should be quick and must not assume the caller's thread.
ProgressCallback = Callable[[float], None]
POLL_INTERVAL_S = 0.5
_BEFORE_VERIFIED = 0.99  # 1.0 is reported only after the download has been verified


def bytes_on_disk(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # renamed or removed by the client between listing and stat
                continue
    return total


class DiskProgress:
    """While active, calls `on_progress(fraction)` from a background thread whenever the fraction changes."""

    def __init__(self, folder: Path, total_bytes: int, on_progress: ProgressCallback | None,
                 interval: float | None = None) -> None:
        self._folder = folder
        self._total = total_bytes
        self._on_progress = on_progress
        self._interval = POLL_INTERVAL_S if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlserve-download-progress", daemon=True)
        self._last: float | None = None

    def fraction(self) -> float:
        if self._total <= 0:
            return 0.0
        return min(bytes_on_disk(self._folder) / self._total, _BEFORE_VERIFIED)

    def _report(self) -> None:
        value = round(self.fraction(), 4)
        if self._last is None or value > self._last:
            self._last = value
            self._on_progress(value)

    def _run(self) -> None:
        while True:
            self._report()
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> DiskProgress:
        if self._on_progress is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
