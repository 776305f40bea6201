"""Incremental detokenization and text-level stop strings for one output sequence.

Text is decoded over a short window (the previous token(s) as context), so spaces that a tokenizer only renders
after a preceding token come out right, and cost stays constant per token. Text ending in U+FFFD (an incomplete
multi-byte UTF-8 character) is held back until the next token completes it. With stop strings, the longest tail
that could still start a stop string is held back too, so streamed text never contains part of a stop string.
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text was already produced
        self.text = ""  # all text produced so far (before the stop string, if one matched)
        self._emitted = 0  # characters of self.text handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Add one token; returns the text that may be emitted now ('' if held back)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        start = len(self.text)
        self.text += after[len(before) :]
        self._check_stop(start)
        return self._release(final=False)

    def flush(self) -> str:
        """The held-back text, at the end of the sequence."""
        return self._release(final=True)

    def _check_stop(self, start: int) -> None:
        if not self.stop:
            return
        longest = max(len(s) for s in self.stop)
        search_from = max(0, start - longest + 1)
        hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _release(self, final: bool) -> str:
        end = len(self.text)
        if not final and not self.stopped and self.stop:
            end -= _stop_prefix_tail(self.text, self.stop)
        end = max(end, self._emitted)
        out = self.text[self._emitted : end]
        self._emitted = end
        return out


def _stop_prefix_tail(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
