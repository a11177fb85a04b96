"""The answer to "how many layers, how wide?", with its uncertainty.

Read from a study's confirmation trials (``depthsearch confirm``): per candidate, the mean
validation and test metric over its seeds with 95 % t-intervals, beside the search's own value
for it (the optimism gap); the best candidate by confirmed validation mean, and the smallest
depth whose interval overlaps the best's. The choice is made on validation; the test part is
reported for it, never used to make it. Baselines (``depthsearch.learn.baselines``) are shown
beside, with a plain warning when the best model does not beat them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from depthsearch.results.verdict import Verdict, verdict_of
from depthsearch.search import trials as keys
from depthsearch.search.confirm import (
    BASELINES,
    Candidate,
    Interval,
    confirmed,
    ended,
    ended_text,
    is_confirm,
    search_trials,
)
from depthsearch.search.trials import metric_names

__all__ = ["Answer", "answer_json", "answer_of", "answer_text", "model_label", "plot_answer"]


def model_label(trial: optuna.trial.FrozenTrial) -> str:
    """``2 layers x 64`` (``x [64, 32]`` where the widths differ)."""
    cfg = trial.user_attrs.get(keys.MODEL_CONFIG)
    sizes = list(cfg.get("hidden_sizes", [])) if isinstance(cfg, dict) else []
    if not sizes:
        return f"trial {trial.number}"
    width = str(sizes[0]) if len(set(sizes)) == 1 else str(sizes)
    return f"{len(sizes)} layer{'s' if len(sizes) > 1 else ''} x {width}"


@dataclasses.dataclass(frozen=True)
class Row:
    candidate: Candidate
    val: Interval
    test: Interval | None

    @property
    def label(self) -> str:
        return model_label(self.candidate.source)

    def shown(self, name: str) -> str:
        """A metric's mean over the seeds with its interval, or ``-``."""
        got = self.candidate.metric(name)
        return got.text() if got is not None else "-"


@dataclasses.dataclass(frozen=True)
class Answer:
    """What :func:`answer_text` prints (also what ``export --pick confirmed`` picks)."""

    metric: str
    test_metric: str
    maximise: bool
    rows: list[Row]
    best: Row | None
    recommended: Row | None
    search_best: optuna.trial.FrozenTrial | None
    baselines: dict[str, dict[str, float]]
    pending: int
    #: Candidates left out of the verdict: fewer than two finished confirmations (label,
    #: trial number, how many finished).
    thin: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    #: Confirmations that ended without a result (candidate's trial number, index).
    ended: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    #: The task's own metrics, shown beside the loss (accuracy and macro-F1; RMSE and MAE).
    task_metrics: tuple[str, ...] = ()
    #: Whether the recommended candidate (else the search's best) beat the baselines.
    verdict: Verdict | None = None

    @property
    def learned(self) -> bool:
        """False when no candidate beat the strongest baseline (it is recommended then)."""
        return self.verdict is None or self.verdict.beat

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximise else a < b


def answer_of(study: optuna.Study) -> Answer:
    """The study's answer from its complete confirmation trials (none yet: no rows)."""
    trials = study.get_trials(deepcopy=False)
    metric = metric_names(study)[0]
    maximise = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    test_metric = "test_loss" if metric == "val_loss" else "test_" + metric.removeprefix("val_")
    task = _task_metrics(trials)
    rows, thin = [], []
    for c in confirmed(trials, [metric, test_metric, *task]):
        val = c.metric(metric)
        if val is not None and val.n < 2:  # one seed has no interval: no verdict on it
            thin.append((model_label(c.source), c.source.number, val.n))
        elif val is not None:
            rows.append(Row(c, val, c.metric(test_metric)))
    sign = -1.0 if maximise else 1.0
    rows.sort(key=lambda r: (r.candidate.depth or 0, sign * r.val.mean))
    best = min(rows, key=lambda r: sign * r.val.mean, default=None)
    recommended = best
    if best is not None:
        for r in sorted(rows, key=lambda r: (r.candidate.depth or 0, sign * r.val.mean)):
            if r.val.overlaps(best.val):
                recommended = r
                break
    complete = [
        t
        for t in search_trials(trials)
        if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0])
    ]
    search_best = min(complete, key=lambda t: (sign * t.values[0], t.number)) if complete else None
    pending = sum(
        1 for t in trials if is_confirm(t) and t.state in (TrialState.WAITING, TrialState.RUNNING)
    )
    stored = study.user_attrs.get(BASELINES)
    known = dict(stored) if isinstance(stored, Mapping) else {}
    judged = recommended.candidate.source if recommended is not None else search_best
    said = None
    if metric == "val_loss" and judged is not None:
        said = verdict_of(judged, known, confirmed=recommended.val if recommended else None)
    return Answer(
        metric,
        test_metric,
        maximise,
        rows,
        best,
        recommended,
        search_best,
        known,
        pending,
        thin,
        ended(trials),
        task,
        said,
    )


def _task_metrics(trials: list[optuna.trial.FrozenTrial]) -> tuple[str, ...]:
    """The task's metrics the trials recorded: a classification's accuracy and macro-F1, or
    RMSE and MAE in the target's units (validation, then test)."""
    for t in trials:
        if "val_accuracy" in t.user_attrs:
            names = ("accuracy", "f1")
            break
        if "val_rmse" in t.user_attrs:
            names = ("rmse", "mae")
            break
    else:
        return ()
    return tuple(f"{part}_{n}" for part in ("val", "test") for n in names)


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _table(a: Answer) -> list[str]:
    head = (
        "layers x width",
        "trial",
        "seeds",
        *(f"{m} (95% CI)" for m in a.task_metrics),
        f"{a.metric} (95% CI)",
        f"{a.test_metric} (95% CI)",
        "search's value",
        "optimism gap",
        "params",
        "s/epoch",
    )
    body = []
    for r in a.rows:
        c = r.candidate
        searched = c.source.values[0] if c.source.values else math.nan
        pruned = c.source.state == TrialState.PRUNED  # its value: where it was stopped
        gap = "-" if pruned or not math.isfinite(searched) else f"{r.val.mean - searched:+.3g}"
        marks = " *" if r is a.recommended and a.learned else ""
        body.append(
            (
                r.label + marks,
                f"{c.source.number}{' (pruned)' if pruned else ''}",
                str(r.val.n),
                *(r.shown(m) for m in a.task_metrics),
                r.val.text(),
                r.test.text() if r.test is not None else "-",
                _num(searched),
                gap,
                str(c.param_count or "-"),
                _num(c.seconds_per_epoch),
            )
        )
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]


def _sentence(a: Answer) -> str:
    best, rec = a.best, a.recommended
    assert best is not None and rec is not None
    test = f", {a.test_metric} {best.test.text()}" if best.test is not None else ""
    task = "".join(f", {m} {best.shown(m)}" for m in a.task_metrics if m.startswith("val_"))
    parts = [
        f"{best.label} (trial {best.candidate.source.number}): {a.metric} "
        f"{best.val.text()}{task}{test} over {best.val.n} seeds"
    ]
    depths: dict[int | None, Row] = {}
    for r in a.rows:  # each other depth's best, by confirmed validation mean
        d = r.candidate.depth
        if (
            r is not best
            and d != best.candidate.depth
            and (d not in depths or a.better(r.val.mean, depths[d].val.mean))
        ):
            depths[d] = r
    for d in sorted(depths, key=lambda d: d or 0):
        r = depths[d]
        verdict = "no better (within the noise)" if r.val.overlaps(best.val) else "worse"
        parts.append(f"{r.label} is {r.val.text()}, {verdict}")
    sentence = "; ".join(parts)
    if rec is best:
        return f"{sentence}: take {best.label}."
    return (
        f"{sentence}: take {rec.label} (trial {rec.candidate.source.number}), the smallest "
        f"depth whose interval overlaps the best's."
    )


#: The order a result's numbers are shown in: the task's own first, the loss last.
SHOWN = ("accuracy", "f1", "rmse", "mae", "loss")


def numbers_text(scores: Mapping[str, Any], part: str = "val") -> str:
    """``val_accuracy=0.93, val_f1=0.92, val_loss=0.21``: a part's numbers, the task's first."""
    return ", ".join(
        f"{part}_{name}={scores[f'{part}_{name}']:.4g}"
        for name in SHOWN
        if isinstance(scores.get(f"{part}_{name}"), (int, float))
    )


def baseline_lines(baselines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per baseline: its validation numbers (the task's first), and the test
    part's where known."""
    lines = []
    for name, scores in baselines.items():
        shown = f"baseline {name}: {numbers_text(scores)}"
        if tested := numbers_text(scores, "test"):
            shown += f" (test part: {tested})"
        lines.append(shown)
    return lines


def answer_text(a: Answer, study_name: str) -> str:
    """The answer as ``depthsearch answer`` prints it."""
    lines = []
    if a.rows:
        lines += [*_table(a), ""]
        if a.learned:
            lines.append(_sentence(a))
            lines.append(
                "(* recommended. Chosen on the confirmed validation means; the test part was "
                "held out of the search and of this choice, and is reported for it only.)"
            )
    else:
        lines.append(
            f"no confirmed candidate yet: run `depthsearch confirm --study {study_name} "
            "--per-depth --seeds 5` (workers pick the trials up; --wait runs them here)"
        )
    if a.verdict is not None and not a.verdict.beat:
        lines.append(a.verdict.text)
        lines.append(f"take the baseline {a.verdict.baseline!r}: no depth does better")
    lines += _notes(a, study_name)
    if a.search_best is not None:
        task = numbers_text(a.search_best.user_attrs)
        lines.append(
            f"the search's best: trial {a.search_best.number} ({model_label(a.search_best)}), "
            f"{a.metric}={a.search_best.values[0]:.4g}{', ' + task if task else ''} (one seed, "
            "picked on this split)"
        )
    lines += baseline_lines(a.baselines)
    return "\n".join(lines)


def _notes(a: Answer, study_name: str) -> list[str]:
    """What is pending, left out, lost, or still improving."""
    lines = []
    if a.pending:
        lines.append(f"{a.pending} confirmation trial(s) still queued or running")
    for label, number, n in a.thin:
        lines.append(
            f"left out of the verdict: {label} (trial {number}) has {n} finished confirmation; "
            "an interval needs two"
        )
    gone = ended_text(a.ended, study_name)
    if gone is not None:
        lines.append(gone)
    still = [
        r.candidate.source.number
        for r in a.rows
        if any(t.user_attrs.get(keys.STILL_IMPROVING) for t in r.candidate.trials)
    ]
    if still:
        lines.append(
            f"note: confirmations of trial(s) {', '.join(map(str, still))} were still improving "
            "at their last epoch; raise [train] max_epochs"
        )
    return lines


def answer_json(a: Answer) -> dict[str, Any]:
    """The answer as data (``answer --json``)."""

    def interval(i: Interval | None) -> dict[str, float] | None:
        if i is None:
            return None
        return {"mean": i.mean, "half_width": i.half, "seeds": i.n}

    return {
        "metric": a.metric,
        "candidates": [
            {
                "trial": r.candidate.source.number,
                "model": model_label(r.candidate.source),
                "depth": r.candidate.depth,
                a.metric: interval(r.val),
                a.test_metric: interval(r.test),
                **{m: interval(r.candidate.metric(m)) for m in a.task_metrics},
                "search_value": r.candidate.source.values[0]
                if r.candidate.source.values
                else None,
                "param_count": r.candidate.param_count,
                "seconds_per_epoch": r.candidate.seconds_per_epoch,
            }
            for r in a.rows
        ],
        "best": a.best.candidate.source.number if a.best else None,
        "recommended": (
            a.recommended.candidate.source.number if a.recommended and a.learned else None
        ),
        "verdict": None if a.verdict is None else a.verdict.text,
        "recommend_baseline": (
            a.verdict.baseline if a.verdict is not None and not a.verdict.beat else None
        ),
        "baselines": a.baselines,
        "left_out": [{"trial": number, "model": label, "seeds": n} for label, number, n in a.thin],
        "ended_without_result": [{"trial": c, "index": i} for c, i in a.ended],
    }


def plot_answer(a: Answer, path: Path) -> bool:
    """The depth curve with error bars: each depth's best confirmed candidate, its mean
    validation (and test) metric over seeds with the 95 % interval. False when there is
    nothing confirmed to draw."""
    if not a.rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sign = -1.0 if a.maximise else 1.0
    per_depth: dict[int, Row] = {}
    for r in a.rows:
        d = r.candidate.depth or 0
        if d not in per_depth or sign * r.val.mean < sign * per_depth[d].val.mean:
            per_depth[d] = r
    depths = sorted(per_depth)
    fig, ax = plt.subplots(figsize=(7, 4))

    def bars(intervals: list[Interval | None], shift: float, label: str) -> None:
        xs = [d + shift for d, i in zip(depths, intervals, strict=True) if i is not None]
        got = [i for i in intervals if i is not None]
        if not got:
            return
        half = [i.half if math.isfinite(i.half) else 0.0 for i in got]
        ax.errorbar(xs, [i.mean for i in got], yerr=half, fmt="o-", capsize=4, label=label)

    bars([per_depth[d].val for d in depths], -0.05, f"{a.metric} (confirmed)")
    bars([per_depth[d].test for d in depths], 0.05, f"{a.test_metric} (held out)")
    for name, scores in a.baselines.items():
        if a.metric in scores:
            ax.axhline(scores[a.metric], linestyle=":", color="grey")
            ax.annotate(f"{name} (val)", (depths[0], scores[a.metric]), fontsize=8)
    ax.set_xticks(depths)
    ax.set_xlabel("layers (best confirmed candidate of each depth)")
    ax.set_ylabel("mean over seeds, 95% interval")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
