"""The download progress meter: bytes in the target folder over the listed total, never going backwards."""

from __future__ import annotations

import time
from pathlib import Path

from vlserve.hub.progress import DiskProgress


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the progress thread did not report in time"
        time.sleep(0.01)


def test_a_file_missed_while_the_client_moves_it_does_not_send_progress_back(tmp_path: Path):
    reported: list[float] = []
    partial, final = tmp_path / "weights.incomplete", tmp_path / "elsewhere" / "weights"
    with DiskProgress(tmp_path, total_bytes=100, on_progress=reported.append, interval=0.01):
        partial.write_bytes(b"x" * 60)
        _wait_for(lambda: reported and reported[-1] == 0.6)
        partial.unlink()  # between the client's listing and its rename, the poll sees the bytes nowhere
        time.sleep(0.1)
        final.parent.mkdir()
        final.write_bytes(b"x" * 80)
        _wait_for(lambda: reported[-1] == 0.8)

    assert reported == sorted(reported) and reported[-1] == 0.8
    assert all(0 <= f <= 0.99 for f in reported)


def test_the_fraction_stops_short_of_done_until_the_download_is_verified(tmp_path: Path):
    reported: list[float] = []
    with DiskProgress(tmp_path, total_bytes=10, on_progress=reported.append, interval=0.01):
        (tmp_path / "all").write_bytes(b"x" * 12)  # client bookkeeping can put more on disk than the listed total
        _wait_for(lambda: reported and reported[-1] == 0.99)

    assert max(reported) == 0.99
