"""Did anything learn? The best candidate against the study's baselines, beyond the noise.

A search always has a best trial, even when every candidate sits at chance: on shuffled
labels, or a series no stacked LSTM forecasts better than its last value. The best counts only
when it beats the strongest baseline by more than the noise of the validation part: for a
classification, an accuracy above the majority class's by two binomial standard errors of the
validation sequences, and a likelihood of the validation labels at least :data:`EVIDENCE`
times the majority class's (its cross-entropy lower by ``log(EVIDENCE) / n`` nats a sequence:
a model at chance that guessed 9 of 10 right has neither); otherwise a loss below the
strongest baseline's by two standard errors over the validation samples (or, when confirmed
over seeds, an interval wholly below it). ``run``, ``status``, ``report`` and ``answer`` say
so the same way, with what to try.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

from depthsearch.search.confirm import Interval
from depthsearch.search.trials import VAL_LOSS_SE

__all__ = ["NOTHING_LEARNED", "Verdict", "verdict_of"]

NOTHING_LEARNED = "no candidate beat the baseline"
_SIGMAS = 2.0
#: How many times likelier the validation labels must be under the model than under the
#: majority class's frequencies (a likelihood ratio of 20: strong evidence, whatever the
#: search's luck on a small validation part).
EVIDENCE = 20.0
_TRY = {
    True: (
        "try more epochs ([train] max_epochs, patience), [space] readout = ['max', 'mean'], "
        "a lower learning rate, or [data] normalize = 'per-sequence'; or check the labels"
    ),
    False: (
        "try [data] difference = true (a trending series), season = N (a seasonal one), a "
        "longer window, or more epochs; or check that the inputs can tell the future"
    ),
}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the best candidate beat the strongest baseline (``beat``), the baseline's
    name, and one line saying it."""

    beat: bool
    baseline: str
    text: str


def _strongest(baselines: Mapping[str, Any]) -> tuple[str, float] | None:
    losses = [
        (name, float(s["val_loss"]))
        for name, s in baselines.items()
        if isinstance(s, Mapping) and isinstance(s.get("val_loss"), (int, float))
    ]
    return min(losses, key=lambda item: item[1]) if losses else None


def _classified(trial: FrozenTrial, majority: Mapping[str, Any], loss: Interval) -> Verdict:
    p, n = float(majority["val_accuracy"]), int(majority["val_count"])
    accuracy = trial.user_attrs.get("val_accuracy")
    margin = _SIGMAS * math.sqrt(max(p * (1 - p), 1.0 / n) / n)
    above = isinstance(accuracy, (int, float)) and accuracy > p + margin
    base = float(majority["val_loss"])
    # The log-likelihood ratio of the validation labels, model over majority class.
    evidence = n * (base - loss.mean)
    strong = evidence > math.log(EVIDENCE)
    below = loss.high < base and strong
    shown = f"{accuracy:.3g}" if isinstance(accuracy, (int, float)) else "?"
    if above and below:
        return Verdict(
            True,
            "majority class",
            f"trial {trial.number} beats the majority class: val_accuracy {shown} against "
            f"{p:.3g} (beyond {_SIGMAS:g} standard errors, {margin:.2g}, of {n} validation "
            "sequences)",
        )
    # Only what failed is said: a model may have the loss and not the accuracy, or the other way.
    failed = []
    if not above:
        failed.append(
            f"val_accuracy {shown} against the majority class's {p:.3g} (within "
            f"{_SIGMAS:g} standard errors, {margin:.2g}, of {n} validation sequences)"
        )
    if not strong:
        failed.append(
            f"val_loss {loss.mean:.4g} against {base:.4g} (a likelihood ratio of "
            f"{math.exp(min(evidence, 50.0)):.3g} where evidence needs {EVIDENCE:g})"
        )
    elif not below:  # the evidence is there, but a confirmed interval reaches the baseline
        failed.append(f"a val_loss interval reaching {loss.high:.4g}, above {base:.4g}")
    return Verdict(
        False,
        "majority class",
        f"{NOTHING_LEARNED}: the best, trial {trial.number}, has {' and '.join(failed)}; "
        f"{_TRY[True]}",
    )


def verdict_of(
    trial: FrozenTrial | None,
    baselines: Mapping[str, Any],
    *,
    confirmed: Interval | None = None,
) -> Verdict | None:
    """The verdict on ``trial`` (the search's best, or the candidate an answer takes, whose
    validation loss over seeds is ``confirmed``); None with nothing to judge."""
    if trial is None or not trial.values or not math.isfinite(trial.values[0]):
        return None
    strongest = _strongest(baselines)
    if strongest is None:
        return None
    se = trial.user_attrs.get(VAL_LOSS_SE)
    half = _SIGMAS * float(se) if isinstance(se, (int, float)) else 0.0
    loss = confirmed or Interval(float(trial.values[0]), half, 1)
    majority = baselines.get("majority class")
    if isinstance(majority, Mapping) and "val_count" in majority:
        return _classified(trial, majority, loss)
    name, value = strongest
    if loss.high < value:
        return Verdict(
            True,
            name,
            f"trial {trial.number} beats the baseline {name!r}: val_loss {loss.mean:.4g} "
            f"against {value:.4g} (by more than its noise, {loss.half:.2g})",
        )
    return Verdict(
        False,
        name,
        f"{NOTHING_LEARNED} ({name!r}): the best, trial {trial.number}, has val_loss "
        f"{loss.mean:.4g} against {value:.4g} (noise {loss.half:.2g}); {_TRY[False]}",
    )
