"""Frame sampling on small solid-colour videos encoded in the test with PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from vlserve.errors import InvalidRequest
from vlserve.families.internvl2_5.video import VideoDecodeError, frame_indices, sample_frames


def colour(index: int) -> tuple[int, int, int]:
    return (10 * index, 255 - 10 * index, 128)


def encode(count: int, container_format: str = "mp4", codec: str = "mpeg4") -> bytes:
    """`count` 64x48 frames, frame i filled with colour(i)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qscale": "2", "g": "1"} if codec == "mpeg4" else {"crf": "10"}
        for index in range(count):
            pixels = np.empty((48, 64, 3), dtype=np.uint8)
            pixels[:] = colour(index)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def frame_number(image) -> int:
    """Which colour(i) the frame shows (nearest by mean colour)."""
    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - colour(i)).sum() for i in range(26)]))


def test_indices_are_internvls_segment_midpoints() -> None:
    assert frame_indices(24, 8) == [1, 4, 7, 10, 13, 15, 18, 21]
    assert frame_indices(100, 1) == [49]
    assert frame_indices(5, 8) == [0, 1, 2, 3, 4]
    assert frame_indices(8, 8) == list(range(8))  # InternVL's formula would repeat frame 4
    assert frame_indices(0, 8) == []


@pytest.mark.parametrize(("container_format", "codec"), [("mp4", "mpeg4"), ("matroska", "libx264")])
def test_sampled_frames_follow_the_indices(container_format: str, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    frames = sample_frames(encode(24, container_format, codec), num_frames=8)
    assert len(frames) == 8
    assert all(frame.mode == "RGB" and frame.size == (64, 48) for frame in frames)
    assert [frame_number(frame) for frame in frames] == [1, 4, 7, 10, 13, 15, 18, 21]


def test_short_video_gives_every_frame_once(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    path.write_bytes(encode(5))
    frames = sample_frames(path, num_frames=8)
    assert [frame_number(frame) for frame in frames] == [0, 1, 2, 3, 4]
    assert [frame_number(frame) for frame in sample_frames(str(path), num_frames=1)] == [2]


@pytest.mark.parametrize("source", [b"not a video at all", b"", Path("/nonexistent/clip.mp4")])
def test_undecodable_input_is_a_clear_value_error(source) -> None:
    with pytest.raises(ValueError, match="video") as caught:
        sample_frames(source)
    assert isinstance(caught.value, VideoDecodeError) and isinstance(caught.value, InvalidRequest)


def test_num_frames_must_be_positive() -> None:
    with pytest.raises(ValueError):
        sample_frames(encode(2), num_frames=0)


def test_an_overstated_frame_count_is_corrected(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlserve.families.internvl2_5 import video

    monkeypatch.setattr(video, "_frame_count", lambda source: 40)  # a container header claiming 40 frames
    frames = sample_frames(encode(24), num_frames=8)
    assert [frame_number(frame) for frame in frames] == [1, 4, 7, 10, 13, 15, 18, 21]
