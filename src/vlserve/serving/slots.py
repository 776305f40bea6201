"""What every `ModelHost` keeps per uid, and the two lifecycle steps that do not depend on where replicas run:
a launch task that turns any failure into the `error` phase, and terminate's cancel-release-forget sequence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from vlserve.errors import EngineError, ModelNotReady, VlserveError
from vlserve.serving.launching import failure_reason
from vlserve.serving.records import ModelRecord, Phase

log = logging.getLogger(__name__)


@dataclass
class SlotBase:
    """The mutable state behind one uid; only its host touches it. Hosts subclass it with their replicas."""

    record: ModelRecord
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None
    task: asyncio.Task | None = None
    closing: bool = False

    def update(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)


async def run_launch(slot: SlotBase, bring_up: Callable[[], Awaitable[None]],
                     clean_up: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    """Run `bring_up`; on any failure (cancellation included) run `clean_up` shielded and record the error phase.
    `slot.ready` is set either way, so `wait_ready` never hangs."""
    try:
        await bring_up()
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await clean_up()
        slot.failure = exc
        slot.update(phase=Phase.ERROR, error=failure_reason(exc))
        if not isinstance(exc, asyncio.CancelledError):
            log.warning("launching %s failed: %s", slot.record.uid, slot.record.error)
        if not isinstance(exc, Exception):
            raise
    finally:
        slot.ready.set()


async def wait_slot_ready(slot: SlotBase, timeout: float | None) -> None:
    """Wait for a launch to end; raise ModelNotReady on timeout, or the launch's error when it failed."""
    try:
        await asyncio.wait_for(slot.ready.wait(), timeout)
    except TimeoutError as exc:
        raise ModelNotReady(f"{slot.record.uid} is still {slot.record.phase.value} after {timeout:g}s") from exc
    if slot.record.phase is Phase.ERROR:
        if isinstance(slot.failure, VlserveError):
            raise slot.failure
        raise EngineError(f"launching {slot.record.uid} failed: {slot.record.error}")


async def terminate_slot(slots: MutableMapping[str, Any], slot: SlotBase,
                         release: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    """Cancel a launch still running, `release` the replicas, and forget the uid (once, even if called twice)."""
    if slot.closing:
        return
    slot.closing = True
    uid = slot.record.uid
    try:
        if slot.task is not None and not slot.task.done():
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
        await release()
    finally:
        slots.pop(uid, None)
        log.info("terminated %s", uid)
