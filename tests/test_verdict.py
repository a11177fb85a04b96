"""The pruner's verdict acts when it is given, on a busy machine too: the verdict on epoch k is
taken before epoch k + 1 starts, so a trial pruned at epoch k trains k epochs, by
construction, and its attributes say so."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from .conftest import depthsearch_cmd
from .test_worker import create, trials

#: Epochs a few hundredths of a second long: with the verdict computed beside training (a
#: reporting process once did), a starved one answered many epochs late.
EPOCHS = 12
#: Two start-up trials, then eight the pruner judges (most pruned early): enough verdicts to
#: check, and the hogs slow every other test of the suite only while these run.
TRIALS = 10
#: The best quarter goes on from epoch 1: most trials are pruned, early.
PERCENTILE = 'kind = "percentile"\npercentile = 25.0\nn_startup_trials = 2\nn_warmup_steps = 0\n'


@pytest.fixture
def cpu_hogs() -> Iterator[int]:
    """Two processes that keep two cores busy, as a shared node's neighbours do; stopped
    afterwards. Yields how many."""
    hogs = [subprocess.Popen([sys.executable, "-S", "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield len(hogs)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# SQLite alone: the verdict is taken in the training thread from the curve the worker holds,
# whatever the storage (and two hogs for half a minute slow every other test beside it).
@pytest.mark.parametrize("fresh_storage_url", ["sqlite"], indirect=True)
def test_a_pruned_trial_trains_no_epoch_past_its_verdict_beside_cpu_hogs(
    tmp_path: Path, fresh_storage_url: str, cpu_hogs: int
) -> None:
    url = fresh_storage_url
    create(
        tmp_path,
        url,
        "busy",
        n_trials=TRIALS,
        max_epochs=EPOCHS,
        pruner=PERCENTILE,
    )
    proc = depthsearch_cmd(
        "launch", "--study", "busy", "--storage", url, "--cpu-workers", "2", timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    done = trials(url, "busy")
    pruned = [t for t in done if t.state == TrialState.PRUNED]
    assert len([t for t in done if t.state.is_finished()]) == TRIALS
    assert pruned, "the percentile pruner stopped no trial"
    for t in pruned:
        verdict = t.user_attrs["pruned_at_epoch"]
        curve = t.intermediate_values
        reason = t.user_attrs["pruned_reason"]
        assert reason.startswith(f"pruned at epoch {verdict} "), t.user_attrs
        # The verdict on epoch k comes before epoch k + 1 starts: k is the last epoch.
        assert max(curve) == verdict, (t.number, verdict, sorted(curve))
        assert t.user_attrs["epochs_trained"] == max(curve), (t.number, t.user_attrs)
        assert t.user_attrs["best_val_loss"] == min(curve.values())
    for t in done:
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["epochs_trained"] == EPOCHS
            assert t.value == t.user_attrs["best_val_loss"]
