"""The reporting process itself: ``python -m depthsearch.worker._reporting_child R W PARENT``.

It reads messages from the worker on fd ``R`` and answers on fd ``W`` (see :mod:`._messages`),
writing each trial's reports with :class:`~depthsearch.search.reporting.TrialReports`: Optuna's
own calls on an ``optuna.Trial`` of the worker's trial id. It imports Optuna, never torch.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

import optuna

from depthsearch._text import mask_uri
from depthsearch.errors import RuntimeFailure
from depthsearch.search.compat import study_storage, trial_for_id
from depthsearch.search.pruners import make_pruner
from depthsearch.search.reporting import Epoch, Retry, TrialReports
from depthsearch.search.trials import retried_trials
from depthsearch.storage import load_all_trials, open_storage, retry_for
from depthsearch.tracking import PARENT_ATTR, TrialRecord
from depthsearch.worker._child import open_child, portable, run_child
from depthsearch.worker._messages import (
    Begin,
    Ended,
    Exit,
    Failed,
    Init,
    Log,
    Pruned,
    Ready,
    StudyDone,
    Submit,
    Sync,
    Synced,
)
from depthsearch.worker._tracking_process import Answers, TrackingProcess

Answer = Log | Ready | Pruned | Failed | Synced

#: How long the study's first trial may wait for the tracking process to import MLflow.
_TRACKER_START_S = 30.0


def _open(init: Init, retry: Retry) -> optuna.Study:
    study: optuna.Study = retry(
        lambda: optuna.load_study(
            study_name=init.study_name,
            storage=open_storage(init.url),
            sampler=optuna.samplers.RandomSampler(),
            pruner=make_pruner(init.spec),
        ),
        "opening the study to report to",
    )
    # What the pruner reads, at its first question: read fast once, then incrementally.
    retry(lambda: load_all_trials(study), "reading the study's trials")
    return study


def _answers(study: optuna.Study, retry: Retry) -> Answers:
    """The tracking process's questions about the study, answered on this process's
    connection."""
    storage = study_storage(study)

    def trial(trial_id: int) -> TrialRecord:
        frozen = retry(functools.partial(storage.get_trial, trial_id), "reading the trial")
        retries = retried_trials(frozen)
        return TrialRecord(
            number=frozen.number,
            state=frozen.state.name,
            params=dict(frozen.params),
            user_attrs=dict(frozen.user_attrs),
            intermediate=dict(frozen.intermediate_values),
            retry_of=retries[-1] if retries else None,
        )

    def parent(_: object) -> object:
        return retry(lambda: study.user_attrs, "reading the study").get(PARENT_ATTR)

    def set_parent(made: object) -> None:
        retry(lambda: study.set_user_attr(PARENT_ATTR, made), "saving the MLflow run")

    return {"trial": trial, "parent": parent, "set_parent": set_parent}


def _serve(rx: Connection, tx: Connection) -> None:
    opened = open_child(rx, tx)  # its send: the thread that relays the tracker's logs too
    if opened is None:
        return
    init, send = opened
    optuna.logging.set_verbosity(init.optuna_verbosity)

    retry = retry_for(init.url, init.spec.workers.db_wait)
    # The tracking process imports MLflow while this one opens the study (and the worker
    # loads its data), both before the worker's first trial.
    tracker = None if init.tracking is None else TrackingProcess(init, log=send)
    study: optuna.Study | None = None
    failed: BaseException | None = None
    try:
        study = _open(init, retry)
    except Exception as e:
        failed = portable(e)
    if tracker is not None:
        if study is not None:
            tracker.attach(_answers(study, retry))
            tracker.wait_ready(_TRACKER_START_S)
        else:
            tracker.close()
            tracker = None
    if study is not None:
        send(Ready())
    try:
        _answer(rx, send, study, failed, retry, tracker)
    finally:
        if tracker is not None and not tracker.close():
            logging.getLogger(__name__).warning(
                "MLflow at %s did not take the last runs in time", mask_uri(tracker.target.uri)
            )


def _answer(
    rx: Connection,
    send: Callable[[Answer], None],
    study: optuna.Study | None,
    failed: BaseException | None,
    retry: Retry,
    tracker: TrackingProcess | None,
) -> None:
    reports: TrialReports | None = None
    current = -1
    while True:
        try:
            message = rx.recv()
        except EOFError:
            return
        if isinstance(message, Exit):
            return
        if isinstance(message, Ended):
            if tracker is not None:
                tracker.end(message.trial_id)
            continue
        if isinstance(message, StudyDone):
            if tracker is not None:
                tracker.study_done()
            continue
        if isinstance(message, Begin):
            current, reports = message.trial_id, None
            if study is None:  # it could not open the study: say why, for every trial
                send(Failed(current, failed or RuntimeFailure("the study is not open")))
                continue
            try:
                trial = retry(functools.partial(trial_for_id, study, current), "reading the trial")
            except Exception as e:
                send(Failed(current, portable(e)))
                continue
            reports = TrialReports(trial, retry, prunes=message.prunes)
            if tracker is not None:
                tracker.begin(current)
        elif isinstance(message, Submit):
            if reports is None or message.trial_id != current:
                continue
            pruned, error = reports.pruned, reports.error
            item = message.item
            reports.handle(item)
            if tracker is not None and isinstance(item, tuple):
                numbers = dict(item.metrics) if isinstance(item, Epoch) else {}
                tracker.epoch(current, int(item[0]), {"val_loss": float(item[1]), **numbers})
            if reports.error is not None and error is None:
                send(Failed(current, portable(reports.error)))
            if reports.pruned is not None and pruned is None:
                send(Pruned(current, reports.pruned))
        elif isinstance(message, Sync):
            send(Synced(message.trial_id, message.upto))


def main(argv: list[str]) -> None:
    """The process's entry point (no lower priority: it had nice +10 once, and training
    waits for the verdict on epoch k before epoch k + 2; beside busy cores it answered many
    epochs late)."""
    run_child(argv, _serve)


if __name__ == "__main__":
    main(sys.argv[1:])
