"""Read a sentencepiece `tokenizer.model` without protobuf: the piece table and the flags that decide encoding.

sentencepiece's Python API exposes pieces and scores but not the piece *type* of user-defined symbols nor the
normalizer/trainer flags, and protobuf is not a dependency of this project. The model file is a protobuf
`ModelProto`; only a handful of fields are needed, so this module decodes the wire format directly.
Field numbers are those of sentencepiece's `sentencepiece_model.proto`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class PieceType(IntEnum):
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass(frozen=True)
class Piece:
    piece: str
    score: float
    type: PieceType


@dataclass(frozen=True)
class SpmModel:
    pieces: tuple[Piece, ...]
    model_type: int  # 1 unigram, 2 bpe
    byte_fallback: bool
    split_by_whitespace: bool
    allow_whitespace_only_pieces: bool
    normalizer_name: str
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool
    escape_whitespaces: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, value) for one message; length-delimited values are bytes, fixed32 are raw bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in sentencepiece model")
        yield number, value


def _piece(buf: bytes) -> Piece:
    text, score, kind = "", 0.0, PieceType.NORMAL
    for number, value in _fields(buf):
        if number == 1:
            text = value.decode("utf-8")
        elif number == 2:
            score = struct.unpack("<f", value)[0]
        elif number == 3:
            kind = PieceType(value)
    return Piece(text, score, kind)


def read_spm_model(data: bytes) -> SpmModel:
    pieces: list[Piece] = []
    trainer: dict[int, object] = {}
    normalizer: dict[int, object] = {}
    for number, value in _fields(data):
        if number == 1:
            pieces.append(_piece(value))
        elif number == 2:
            trainer = dict(_fields(value))
        elif number == 3:
            normalizer = dict(_fields(value))
    return SpmModel(
        pieces=tuple(pieces),
        model_type=int(trainer.get(3, 1)),
        byte_fallback=bool(trainer.get(35, 0)),
        split_by_whitespace=bool(trainer.get(22, 1)),
        allow_whitespace_only_pieces=bool(trainer.get(26, 0)),
        normalizer_name=bytes(normalizer.get(1, b"")).decode("utf-8"),
        add_dummy_prefix=bool(normalizer.get(3, 1)),
        remove_extra_whitespaces=bool(normalizer.get(4, 1)),
        escape_whitespaces=bool(normalizer.get(5, 1)),
    )
