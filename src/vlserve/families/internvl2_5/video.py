"""Video frames for InternVL2.5: decode with PyAV and keep `num_frames` frames spread over the whole video.

Frame choice follows InternVL's `get_index` (README `load_video`, no time bound): the frames 0..N-1 are cut into
`num_frames` segments of (N-1)/num_frames and the frame at each segment's middle is kept,
`int(seg/2 + round(seg*i))` (round half to even, as numpy's). A video with no more frames than requested gives
every frame once (InternVL's formula would repeat some). Each frame then becomes one 448x448 tile (prompt.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from vlserve.errors import InvalidRequest

DEFAULT_NUM_FRAMES = 8


class VideoDecodeError(InvalidRequest, ValueError):
    """The bytes or file are not a video PyAV can decode (a 400 for the API, a ValueError for callers)."""


def frame_indices(total: int, num_frames: int) -> list[int]:
    """Indices of the frames to keep from a video of `total` frames."""
    if total <= num_frames:
        return list(range(total))
    segment = (total - 1) / num_frames
    return [int(segment / 2 + round(segment * i)) for i in range(num_frames)]


def sample_frames(source: bytes | bytearray | str | Path, num_frames: int = DEFAULT_NUM_FRAMES) -> list[Image.Image]:
    """`num_frames` RGB frames uniformly spread over the video (all of them when it has fewer)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    indices = frame_indices(_frame_count(source), num_frames)
    frames, seen = _decode(source, indices)
    if len(frames) < len(indices):  # the container announced more frames than it holds: choose from those there
        frames, _ = _decode(source, frame_indices(seen, num_frames))
    if not frames:
        raise VideoDecodeError("the video has no decodable frames; send a video with at least one frame")
    return frames


def _open(source: bytes | bytearray | str | Path):
    import av

    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source))
    except av.FFmpegError as error:
        raise VideoDecodeError(f"could not read the video ({error}); send an mp4/webm/avi/mov file") from error


def _frame_count(source: bytes | bytearray | str | Path) -> int:
    """Frames in the first video stream: the container's count, else its packets (demux only, no decoding)."""
    import av

    with _open(source) as container:
        stream = _video_stream(container)
        if stream.frames > 0:
            return stream.frames
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"could not read the video ({error})") from error


def _decode(source: bytes | bytearray | str | Path, indices: list[int]) -> tuple[list[Image.Image], int]:
    """The frames at `indices` (in order) and how many frames were decoded: all of them when some are missing."""
    import av

    wanted, frames, seen = set(indices), [], 0
    last = max(indices, default=-1)
    with _open(source) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                seen = index + 1
                if index in wanted:
                    frames.append(frame.to_image())
                if index >= last:
                    break
        except av.FFmpegError as error:
            raise VideoDecodeError(f"could not decode the video ({error})") from error
    return frames, seen


def _video_stream(container):
    if not container.streams.video:
        raise VideoDecodeError("the file has no video stream; send a video (an image goes in an image part)")
    return container.streams.video[0]
