"""Continuous batching: one thread owns the model; requests join and leave the running decode batch at any step.

Loop: admit a waiting request when cache slots are free and no other prefill is running; advance the running
prefill (prefill.py: cached prefix, images, prompt chunks) for one time slice; when it completes, its K/V are
copied into its slot(s) (n choices share one prefill) and it joins the batch; drop aborted sequences; then ONE
forward pass decodes one token for every active sequence. So a long image prefill alternates with decode steps
instead of stalling them. Results go back to each caller through `emit` (thread-safe).

Failures stay as small as they can: a prefill, a sampling or a detokenizing error fails only its request; an error
in the shared forward pass fails the requests of that batch, and the loop goes on. If the thread itself dies (a
BaseException), `failure` says why, every request in flight fails with `EngineDead`, and new ones are refused.

An idle loop parks: once nothing has been running or waiting for IDLE_PARK_S (50 ms), its thread ends, and the next
request starts a new one. A thread that ran torch ops keeps an OpenMP team until it exits, and with more OpenMP threads
than cores libgomp makes every team sleep after each parallel region (engines/threads.py): an idle model loaded beside a
busy one slowed the busy one's decode by a third (full-size 1B `4-bit` on the 2-core machine: 28.7 tok/s alone, 18-21
tok/s with a bf16 model resident and idle, back to 28.8 once the idle model's scheduler thread had ended).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlserve.engines.base import Delta, FinishReason, SamplingParams, TokenLogprob
from vlserve.engines.transformers_engine.decode import ChunkStep, DecodeStep
from vlserve.engines.transformers_engine.detok import IncrementalDetokenizer
from vlserve.engines.transformers_engine.guided import GuidedSequence, mask_rows
from vlserve.engines.transformers_engine.kv_cache import SlotKVCache
from vlserve.engines.transformers_engine.prefill import Prefill, PrefillTools
from vlserve.engines.transformers_engine.sampler import SequenceSampler, choose_batch
from vlserve.errors import EngineDead

if TYPE_CHECKING:
    import torch

IDLE_PARK_S = 0.05  # idle this long, the loop's thread ends (see above); a new request starts another

log = logging.getLogger(__name__)
Emit = Callable[[Delta | BaseException | None], None]  # None: the request is complete


@dataclass
class Job:
    """One request, tokenized: what the scheduler needs to run it."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    max_tokens: int
    emit: Emit
    running: int = 0  # choices still decoding
    failed: bool = False  # its error was sent; its remaining choices leave the batch silently
    grammar: Callable[[], GuidedSequence] | None = None  # structured output: a fresh grammar state per choice
    images: tuple[Any, ...] = ()  # the family's image records (key, tiles, pixel_values), in prompt order


@dataclass
class Sequence:
    job: Job
    index: int
    sampler: SequenceSampler
    detok: IncrementalDetokenizer
    next_token: int = -1
    completion: int = 0
    finish: FinishReason | None = None
    pending_text: list[str] = field(default_factory=list)
    last_ids: tuple[int, ...] = ()  # the finishing token, when it is part of the output
    last_logprobs: tuple[TokenLogprob, ...] = ()  # its logprob, when asked
    guided: GuidedSequence | None = None  # structured output: the grammar's state


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class ModelParts:
    """transformers' generic VLM layout: the full model (prefill), and its text stack pieces (decode)."""

    model: Any
    embed: Any
    language_model: Any
    lm_head: Any
    input_device: torch.device
    vocab_size: int
    decode: DecodeStep  # one token per sequence through the language model (decode.py)
    chunk: ChunkStep  # one prefill chunk of one sequence through the language model (decode.py)
    prefills_done: Callable[[], None] = _nothing  # no prefill left to run: drop what only prefills use (int4.py)


class Scheduler:
    def __init__(self, tools: PrefillTools, cache: SlotKVCache, stop_ids: frozenset[int], tokenizer: Any,
                 slice_s: float = 0.2) -> None:  # fmt: skip
        self.parts, self.tools, self.cache = tools.parts, tools, cache
        self.stop_ids, self.tokenizer = stop_ids, tokenizer
        self.slice_s = slice_s  # prefill time per loop iteration (between two decode steps)
        self.prefilling: Prefill | None = None
        self.inbox: queue.Queue[Job | None] = queue.Queue()
        self.waiting: list[Job] = []
        self.batch: list[Sequence] = []  # batch[i] lives in cache slot i
        self._aborts: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._parked = True  # no thread runs the loop; `submit` starts one
        self._stopping = False
        self.failure: str | None = None  # why this scheduler serves nothing any more (thread died, stopped)
        self.steps = 0
        self._prefilled = False  # a prefill ran since parts.prefills_done was last called

    # ------------------------------------------------------------ called from other threads

    def start(self) -> None:
        with self._lock:
            self._unpark()

    def submit(self, job: Job) -> None:
        with self._lock:  # never after the loop has drained the inbox for good
            if self.failure is not None:
                raise EngineDead(f"this model's engine stopped: {self.failure}; terminate and relaunch the model")
            self.inbox.put(job)
            self._unpark()

    def abort(self, request_id: str) -> None:
        with self._lock:
            if self._parked:  # nothing runs or waits (see _park): the request is over
                return
            self._aborts.add(request_id)
        self.inbox.put(None)  # wake the loop if idle

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            parked = self._parked
        if parked:  # no thread left to close the loop: nothing runs or waits (see _park)
            self._close("the model was unloaded")
            return
        self.inbox.put(None)
        self._thread.join(timeout=60)

    def _unpark(self) -> None:
        """(Under the lock.) A new thread for the loop when none runs it."""
        if self._parked and not self._stopping:
            self._parked = False
            self._thread = threading.Thread(target=self._run, name="vlserve-transformers-scheduler", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while not self._stopping:
                    try:
                        if self._iteration():
                            return  # parked: the next request starts a new thread
                    except Exception as exc:  # noqa: BLE001 - fail the requests of this batch, keep serving
                        log.exception("decode step failed")
                        self._fail_all(exc)
        except BaseException as exc:  # the thread is dying: nothing may wait on it forever
            log.critical("the scheduler thread died", exc_info=exc)
            self._close(f"the scheduler thread died ({type(exc).__name__}: {exc})")
            return
        self._close("the model was unloaded")

    def _close(self, reason: str) -> None:
        with self._lock:
            self.failure = reason
            self._collect(block=False)
        self._fail_all(EngineDead(f"this model's engine stopped: {reason}"))

    def _iteration(self) -> bool:
        """One pass of the loop; True when it parked (its thread is to end)."""
        idle = not self.batch and not self.waiting and self.prefilling is None
        self._collect(block=idle)
        if idle and not self.waiting and self._park():
            return True
        self._apply_aborts()
        self._prefill_slice()
        if self._prefilled and self.prefilling is None and not self._can_admit():
            self._prefilled = False
            self.parts.prefills_done()
        if self.batch:
            self._decode_step()
        return False

    def _park(self) -> bool:
        """Nothing ran or arrived for IDLE_PARK_S: end this thread unless a request came meanwhile. Pending aborts
        can only name requests that are over (none runs or waits), so they are dropped, as `abort` drops those
        that come while parked."""
        with self._lock:
            if not self.inbox.empty() or self._stopping:
                return False
            self._parked, self._aborts = True, set()
            return True

    def _collect(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=IDLE_PARK_S) if block else self.inbox.get_nowait()
            while True:
                if item is not None:
                    self.waiting.append(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return

    def _apply_aborts(self) -> None:
        with self._lock:
            aborts, self._aborts = self._aborts, set()
        if not aborts:
            return
        if self.prefilling is not None and self.prefilling.job.request_id in aborts:
            self.waiting.insert(0, self.prefilling.job)  # ends below like a waiting request; its units stop here
            self.prefilling = None
        for job in [j for j in self.waiting if j.request_id in aborts]:
            self.waiting.remove(job)
            for index in range(job.sampling.n):
                job.emit(Delta(index, "", finish_reason="abort", prompt_tokens=len(job.prompt_ids)))
            job.emit(None)
        for seq in self.batch:
            if seq.job.request_id in aborts:
                seq.finish = "abort"
        self._retire_finished()

    def _prefill_slice(self) -> None:
        """Advance prefills for one time slice, admitting waiting requests one at a time as slots allow. The slice
        ends the same way when nothing decodes: the loop then collects new requests and aborts between slices."""
        deadline = time.perf_counter() + self.slice_s
        while self.prefilling is not None or self._admit():
            prefill, self._prefilled = self.prefilling, True
            try:
                done = prefill.advance(deadline)
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                log.exception("prefill of %s failed", prefill.job.request_id)
                self.prefilling = None
                self._fail_job(prefill.job, exc)
                continue
            if not done:
                return
            self.prefilling = None
            self._join(prefill)
            if time.perf_counter() >= deadline:
                return

    def _admit(self) -> bool:
        """Start the next waiting request's prefill when cache slots are free for all its choices."""
        if not self._can_admit():
            return False
        self.prefilling = Prefill(self.waiting.pop(0), self.tools)
        return True

    def _can_admit(self) -> bool:
        return bool(self.waiting) and self.cache.active + self.waiting[0].sampling.n <= self.cache.slots

    # ------------------------------------------------------------ prefill and decode

    def _join(self, prefill: Prefill) -> None:
        """A prefilled request joins the batch: its choices' first tokens, its K/V into cache slots."""
        try:
            self._start(prefill.job, prefill.logits, prefill.layers)
        except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
            log.exception("starting %s failed", prefill.job.request_id)
            self._fail_job(prefill.job, exc)
        self._retire_finished()

    def _start(self, job: Job, logits: torch.Tensor, layers: list) -> None:
        p = self.parts
        logprobs = _log_softmax(logits[None]) if job.sampling.logprobs is not None else None
        # Everything that can fail for this request alone (sampler set-up, the first choice) comes before its K/V
        # take cache slots: a slot is freed only through a sequence in the batch, so none may be taken without one.
        seqs, firsts = [], []
        for index in range(job.sampling.n):
            sampler = SequenceSampler.create(job.sampling, job.prompt_ids, p.vocab_size, index, device=logits.device)
            guided = job.grammar() if job.grammar is not None else None
            seqs.append(Sequence(job, index, sampler, IncrementalDetokenizer(self.tokenizer, job.sampling.stop),
                                 guided=guided))  # fmt: skip
            row = logits.clone()[None]
            if guided is not None:
                mask_rows(row, [0], [guided])
            firsts.append(sampler.choose(row[0]) if not sampler.plain_greedy else int(row[0].argmax()))
        entries = [self._logprob(logprobs, 0, t, job) if logprobs is not None else None for t in firsts]
        self.cache.add(layers, copies=job.sampling.n)
        self.batch.extend(seqs)
        job.running += len(seqs)
        for seq, token, entry in zip(seqs, firsts, entries, strict=True):
            self._accept(seq, token, entry)

    def _decode_step(self) -> None:
        import torch

        p = self.parts
        positions, mask = self.cache.begin_step(p.input_device)
        ids = torch.tensor([[s.next_token] for s in self.batch], dtype=torch.long, device=p.input_device)
        hidden = p.decode(p.embed(ids), positions, mask, self.cache)
        self.cache.end_step()
        logits = p.lm_head(hidden[:, -1]).float()
        asking = [row for row, seq in enumerate(self.batch) if seq.job.sampling.logprobs is not None]
        logprobs = _log_softmax(logits[asking]) if asking else None  # before sampling changes the rows in place
        guided = [row for row, seq in enumerate(self.batch) if seq.guided is not None]
        if guided:
            mask_rows(logits, guided, [self.batch[row].guided for row in guided])
        tokens = self._choose(logits)
        self.steps += 1
        for row, (seq, token) in enumerate(zip(self.batch, tokens, strict=True)):
            if token is not None and not seq.job.failed:
                try:
                    entry = self._logprob(logprobs, asking.index(row), token, seq.job) if row in asking else None
                    self._accept(seq, token, entry)
                except Exception as exc:  # noqa: BLE001 - this request fails, the batch goes on
                    log.exception("request %s failed in decoding", seq.job.request_id)
                    self._fail_job(seq.job, exc)
        self._retire_finished()

    def _choose(self, logits: torch.Tensor) -> list[int | None]:
        """The next token of each sequence; when the batched choice fails, choose per sequence to fail only the
        sequences whose sampling fails (None)."""
        try:
            return choose_batch([s.sampler for s in self.batch], logits)
        except Exception:  # noqa: BLE001
            log.exception("batched sampling failed; retrying per sequence")
        tokens: list[int | None] = []
        for row, seq in enumerate(self.batch):
            try:
                tokens.append(choose_batch([seq.sampler], logits[row : row + 1])[0])
            except Exception as exc:  # noqa: BLE001
                self._fail_job(seq.job, exc)
                tokens.append(None)
        return tokens

    def _fail_job(self, job: Job, exc: BaseException) -> None:
        """Send `exc` to one request and retire all its choices at the next `_retire_finished`."""
        if job.failed:
            return
        job.failed = True
        for seq in self.batch:
            if seq.job is job:
                seq.finish = "error"
        job.emit(exc)
        job.emit(None)

    def _logprob(self, logprobs: torch.Tensor, row: int, token: int, job: Job) -> TokenLogprob:
        """Token `token`'s entry from row `row` of log-softmaxed logits, with the job's number of alternatives."""
        import torch

        values = logprobs[row]
        top = torch.topk(values, job.sampling.logprobs) if job.sampling.logprobs else None
        alternatives = () if top is None else tuple(
            (i, self._token_text(i), v) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        )  # fmt: skip
        return TokenLogprob(token, self._token_text(token), float(values[token]), alternatives)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _accept(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> None:
        """Account one sampled token: stop token, stop string, length limit, or text to stream."""
        if seq.guided is not None:
            seq.guided.accept(token)
        seq.completion += 1
        if token in self.stop_ids and not seq.job.sampling.ignore_eos:
            seq.finish = "stop"
            seq.pending_text.append(seq.detok.flush())
            return
        seq.sampler.record(token)
        text = seq.detok.add(token)
        if seq.detok.stopped:
            seq.finish = "stop"
        elif seq.completion >= seq.job.max_tokens:
            seq.finish = "length"
        seq.next_token = token
        logprobs = (logprob,) if logprob is not None else ()
        if seq.finish is None:
            seq.job.emit(Delta(seq.index, text, (token,), None, len(seq.job.prompt_ids), seq.completion, logprobs))
        else:
            seq.pending_text += [text, seq.detok.flush()]
            seq.last_ids, seq.last_logprobs = (token,), logprobs

    def _retire_finished(self) -> None:
        for slot in range(len(self.batch) - 1, -1, -1):
            seq = self.batch[slot]
            if seq.finish is None:
                continue
            moved = self.cache.remove(slot)
            if moved is not None:
                self.batch[slot] = self.batch[moved]
            self.batch.pop()
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        job = seq.job
        job.running -= 1
        if job.failed:
            return
        text = "".join(seq.pending_text)
        job.emit(Delta(seq.index, text, seq.last_ids, seq.finish, len(job.prompt_ids), seq.completion,
                       seq.last_logprobs))  # fmt: skip
        if job.running == 0:
            job.emit(None)

    def _fail_all(self, exc: BaseException) -> None:
        jobs = {id(s.job): s.job for s in self.batch} | {id(j): j for j in self.waiting}
        if self.prefilling is not None:
            jobs[id(self.prefilling.job)] = self.prefilling.job
            self.prefilling = None
        while self.batch:
            self.cache.remove(len(self.batch) - 1)
            self.batch.pop()
        self.waiting.clear()
        for job in jobs.values():
            if not job.failed:
                job.failed = True
                job.emit(exc)
                job.emit(None)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.log_softmax(logits, dim=-1)
