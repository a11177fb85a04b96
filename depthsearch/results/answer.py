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

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximise else a < b


def answer_of(study: optuna.Study) -> Answer:
    """The study's answer from its complete confirmation trials (none yet: no rows)."""
    trials = study.get_trials(deepcopy=False)
    metric = metric_names(study)[0]
    maximise = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    test_metric = "test_loss" if metric == "val_loss" else "test_" + metric.removeprefix("val_")
    rows, thin = [], []
    for c in confirmed(trials, [metric, test_metric]):
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
    return Answer(
        metric,
        test_metric,
        maximise,
        rows,
        best,
        recommended,
        search_best,
        dict(stored) if isinstance(stored, Mapping) else {},
        pending,
        thin,
        ended(trials),
    )


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _table(a: Answer) -> list[str]:
    head = (
        "layers x width",
        "trial",
        "seeds",
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
        marks = " *" if r is a.recommended else ""
        body.append(
            (
                r.label + marks,
                f"{c.source.number}{' (pruned)' if pruned else ''}",
                str(r.val.n),
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
    parts = [
        f"{best.label} (trial {best.candidate.source.number}): {a.metric} "
        f"{best.val.text()}{test} over {best.val.n} seeds"
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


def baseline_lines(
    baselines: Mapping[str, Mapping[str, float]], metric: str, best: float | None, maximise: bool
) -> list[str]:
    """One line per baseline (validation, and test where known), and a warning where the
    best model (``best``: its validation ``metric``) does not beat one."""
    lines = []
    for name, scores in baselines.items():
        val = scores.get(metric)
        if val is None:
            continue
        extra = ", ".join(
            f"{k}={v:.4g}" for k, v in scores.items() if k != metric and not k.startswith("test_")
        )
        test_key = "test_" + metric.removeprefix("val_")
        test = scores.get(test_key)
        shown = f"baseline {name}: {metric}={val:.4g}" + (f", {extra}" if extra else "")
        if test is not None:
            shown += f" (test part: {test_key}={test:.4g})"
        lines.append(shown)
        if best is not None and not (best > val if maximise else best < val):
            lines.append(
                f"WARNING: the best model ({metric}={best:.4g}) does not beat the baseline "
                f"{name!r} ({val:.4g}); a trending series may need [data] difference = true"
            )
    return lines


def answer_text(a: Answer, study_name: str) -> str:
    """The answer as ``depthsearch answer`` prints it."""
    lines = []
    if a.rows:
        lines += _table(a)
        lines.append("")
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
    shown = a.best.val.mean if a.best is not None else None
    if shown is None and a.search_best is not None:
        shown = a.search_best.values[0]
    if a.search_best is not None:
        lines.append(
            f"the search's best: trial {a.search_best.number} ({model_label(a.search_best)}), "
            f"{a.metric}={a.search_best.values[0]:.4g} (one seed, picked on this split)"
        )
    lines += baseline_lines(a.baselines, a.metric, shown, a.maximise)
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
    return "\n".join(lines)


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
                "search_value": r.candidate.source.values[0]
                if r.candidate.source.values
                else None,
                "param_count": r.candidate.param_count,
                "seconds_per_epoch": r.candidate.seconds_per_epoch,
            }
            for r in a.rows
        ],
        "best": a.best.candidate.source.number if a.best else None,
        "recommended": a.recommended.candidate.source.number if a.recommended else None,
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
