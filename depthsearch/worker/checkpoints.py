"""Per-trial checkpoints in an Optuna artifact store, so a retried trial resumes, not restarts.

A trial keeps its last training state (:class:`~depthsearch.learn.train.TrainState`: model,
optimiser, random states, early-stopping state, epochs so far) under two names it alternates
between, ``STUDY-HASH.trial-N.a`` and ``.b`` (:func:`stem`): a write cut short (a SIGKILL, a
lost node) spoils at most the one being written, and the other still holds the epoch before.
Writes run on a thread beside training: an epoch hands its copy over and goes on; when the
store is slower than the training, an older pending state is dropped for the newer one, and an
epoch never waits. At most one state is written every ``[workers] checkpoint_seconds`` of
training (none in a shorter trial): a write (pickling, under Python's lock) after every 50 ms
epoch would cost a short trial a tenth of its time, and a kill loses at most those seconds
and an epoch. The newest state held back is written when the trial stops to run again (a
signal, the database lost, another worker's stale check), so such a stop loses nothing.

The trial that retries a failed one (same parameters and seed, Optuna's
``RetryHeartbeatStaleTrialCallback``) reads the newest intact state of the trials it retries,
newest first, checks that it belongs to that trial (study, number, parameters, seed) and goes
on from its epoch. A finished trial removes its states and those of the trials it retried
(the worker's trial loop does, in its one ``finish``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from optuna.artifacts.exceptions import ArtifactNotFound

from depthsearch.errors import InputError
from depthsearch.learn.train import CorruptCheckpoint, TrainState
from depthsearch.search.resume import Resumed
from depthsearch.spec import StudySpec
from depthsearch.storage import sqlite_file

__all__ = ["ArtifactStore", "Checkpoints", "TrialCheckpoints", "open_checkpoints", "stem"]

_log = logging.getLogger(__name__)

_SLOTS = ("a", "b")
#: How long a stopping trial waits for its last state to reach the store.
FLUSH_S = 60.0


class ArtifactStore(Protocol):
    """Optuna's artifact store protocol (``optuna.artifacts``): what we call of it."""

    def open_reader(self, artifact_id: str) -> Any: ...

    def write(self, artifact_id: str, content_body: Any) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


def stem(study_name: str) -> str:
    """The study's part of its checkpoint names: readable (the name's first 40 characters,
    others than letters, digits and ``._-`` as ``_``) and injective (a hash of the whole name):
    "col a" and "col_a" never share a file, and a 500-character name still fits a file name."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in study_name[:40])
    return f"{safe}-{hashlib.sha256(study_name.encode()).hexdigest()[:12]}"


class Checkpoints:
    """The checkpoints of one study in one store (``where`` names it in messages)."""

    def __init__(
        self,
        store: ArtifactStore,
        study_name: str,
        where: str,
        *,
        prefix: str = "",
        every_s: float = 0.0,
    ) -> None:
        self.store = store
        self.where = where
        self._study = study_name
        self._stem = prefix + stem(study_name)
        self._warned: set[str] = set()
        #: At most one write every this many seconds (``[workers] checkpoint_seconds``).
        self.every_s = every_s

    def warn_once(self, kind: str, message: str) -> None:
        """A store that fails fails every trial alike: one warning per kind of failure."""
        if kind in self._warned:
            _log.debug("%s", message)
            return
        self._warned.add(kind)
        _log.warning("%s", message)

    def _id(self, number: int, slot: str) -> str:
        return f"{self._stem}.trial-{number}.{slot}"

    def _identity(self, number: int, params: dict[str, Any], seed: int) -> dict[str, Any]:
        return {"study": self._study, "trial": number, "params": params, "seed": seed}

    def for_trial(self, number: int, params: dict[str, Any], seed: int) -> TrialCheckpoints:
        return TrialCheckpoints(self, number, self._identity(number, params, seed))

    def _read(self, number: int, slot: str) -> TrainState | None:
        """The state in one slot; None when there is none; CorruptCheckpoint when damaged."""
        try:
            reader = self.store.open_reader(self._id(number, slot))
        except ArtifactNotFound:
            return None
        with contextlib.closing(reader):
            data = reader.read()
        return TrainState.from_bytes(data)

    def resume(self, retried: Sequence[int], params: dict[str, Any], seed: int) -> Resumed:
        """The newest intact state among the trials ``retried`` (the failed trial last)."""
        problems: list[str] = []
        for number in reversed(retried):
            found: list[TrainState] = []
            for slot in _SLOTS:
                try:
                    state = self._read(number, slot)
                except CorruptCheckpoint as e:
                    problems.append(f"trial {number}'s checkpoint {slot} is corrupt: {e}")
                    continue
                except Exception as e:
                    problems.append(
                        f"trial {number}'s checkpoint {slot} could not be read: "
                        f"{type(e).__name__}: {e}"
                    )
                    continue
                if state is None:
                    continue
                expected = self._identity(number, params, seed)
                got = {k: state.meta.get(k) for k in expected}
                if got != expected:
                    problems.append(f"trial {number}'s checkpoint {slot} is another trial's")
                    continue
                found.append(state)
            if found:
                return Resumed(max(found, key=lambda s: s.epoch), number, None)
        if not problems:
            shown = ", ".join(str(n) for n in retried)
            problems.append(f"no checkpoint of trial {shown} in {self.where}")
        return Resumed(None, None, "; ".join(problems))

    def remove(self, numbers: Sequence[int]) -> None:
        for number in numbers:
            for slot in _SLOTS:
                with contextlib.suppress(Exception):  # absent, or the store is gone: nothing kept
                    self.store.remove(self._id(number, slot))


class TrialCheckpoints:
    """One trial's writer: :meth:`save` hands a state over; a thread writes it."""

    def __init__(self, owner: Checkpoints, number: int, identity: dict[str, Any]) -> None:
        self._owner = owner
        self._number = number
        self._identity = identity
        # When a state last went to the thread (the trial's start: a trial shorter than
        # the store's ``every_s`` writes none unless it stops to run again).
        self._handed_at = time.monotonic()
        self._held: TrainState | None = None  # the newest state not handed over (too soon)
        self._pending: TrainState | None = None
        self._busy = False
        self._slot = 0
        self._broken: str | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Epoch of the newest state in the store.
        self.saved_epoch = 0

    def save(self, state: TrainState) -> None:
        """Never blocks: the state replaces any not yet written; within the store's
        ``every_s`` of the last one handed over, it is only held (:meth:`close` may write
        it)."""
        if self._broken is not None:
            return
        state.meta = dict(self._identity)
        now = time.monotonic()
        if now - self._handed_at < self._owner.every_s:
            self._held = state
            return
        self._held, self._handed_at = None, now
        self._hand_over(state)

    def _hand_over(self, state: TrainState) -> None:
        with self._cond:
            self._pending = state
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"checkpoints-{self._number}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        # Background work: on a machine whose every core trains, it must not take a core
        # from training (Linux: a thread's own nice value).
        with contextlib.suppress(OSError, AttributeError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 10)
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                state, self._pending = self._pending, None
                self._busy = True
            try:
                self._write(state)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, state: TrainState) -> None:
        if self._broken is not None:
            return
        owner = self._owner
        slot = _SLOTS[self._slot]
        try:
            if not self.saved_epoch:
                # A trial of this number from an earlier run may have left states behind:
                # the slot not written now would outlive this trial's first write.
                with contextlib.suppress(Exception):
                    owner.store.remove(owner._id(self._number, _SLOTS[1 - self._slot]))
            owner.store.write(owner._id(self._number, slot), io.BytesIO(state.to_bytes()))
        except Exception as e:
            self._broken = f"{type(e).__name__}: {e}"
            owner.warn_once(
                f"{type(e).__name__}:{getattr(e, 'errno', '')}",
                f"training goes on without checkpoints: writing to {owner.where} failed "
                f"({self._broken})",
            )
            return
        self._slot = 1 - self._slot
        self.saved_epoch = state.epoch

    def flush(self, timeout: float = FLUSH_S) -> None:
        """Waits (up to ``timeout``) until the newest state handed over is in the store."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, *, keep_last: bool = False) -> None:
        """Stops the writer once what is pending is written (bounded by :data:`FLUSH_S`);
        with ``keep_last`` (the trial runs again), the state held back first."""
        if keep_last and self._held is not None and self._broken is None:
            self._hand_over(self._held)
        self._held = None
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=FLUSH_S)


def open_checkpoints(spec: StudySpec, storage_url: str, study_name: str) -> Checkpoints | None:
    """The study's checkpoint store, from ``[workers] checkpoints``: ``auto`` is a folder beside
    a SQLite file (every worker on that machine sees it) and off for a server database (whose
    workers may share no folder: name one, or an ``s3://`` bucket). None when off or when the
    folder cannot be made (one warning; trials then train without checkpoints)."""
    where = spec.workers.checkpoints
    if where == "auto":
        database = sqlite_file(storage_url)
        if database is None:
            return None
        where = str(database.with_name(database.name + ".checkpoints"))
    if where == "off":
        return None
    if where.startswith("s3://"):
        bucket, _, prefix = where[5:].partition("/")
        import importlib.util

        if importlib.util.find_spec("boto3") is None:  # optional: only S3 stores need it
            raise InputError(
                f"[workers] checkpoints = {where!r} needs boto3 (pip install boto3), "
                "or use a folder every worker sees"
            )
        from optuna.artifacts import Boto3ArtifactStore

        prefix = prefix.strip("/")
        return Checkpoints(
            Boto3ArtifactStore(bucket),
            study_name,
            where,
            prefix=f"{prefix}/" if prefix else "",
            every_s=spec.workers.checkpoint_seconds,
        )
    from optuna.artifacts import FileSystemArtifactStore

    folder = Path(where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _log.warning(
            "trials train without checkpoints: cannot create the folder %s ([workers] "
            "checkpoints): %s",
            folder,
            e.strerror or e,
        )
        return None
    return Checkpoints(
        FileSystemArtifactStore(folder),
        study_name,
        str(folder),
        every_s=spec.workers.checkpoint_seconds,
    )
