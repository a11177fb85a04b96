"""A static report that answers "how deep, how wide?" (the trials as a table are in
:mod:`depthsearch.results.table`).

The report is an ``index.html`` with PNGs beside it, readable with no network: nothing is
fetched from a CDN.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from depthsearch._text import counted
from depthsearch.errors import InputError
from depthsearch.results.answer import answer_of, answer_text, plot_answer
from depthsearch.results.export import open_study, pick_trial
from depthsearch.search import trials as keys
from depthsearch.search.trials import describe_front, metric_names, trial_curve, trial_layers
from depthsearch.storage import mask_url

__all__ = ["write_report"]


def _loss(t: optuna.trial.FrozenTrial) -> float:
    """The validation loss (the first objective); NaN when the trial has none."""
    return float(t.values[0]) if t.values else math.nan


def _accuracy(t: optuna.trial.FrozenTrial) -> float:
    """A classification's validation accuracy at the best epoch; NaN for other tasks."""
    value = t.user_attrs.get("val_accuracy")
    return float(value) if isinstance(value, (int, float)) else math.nan


def _confusion_table(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's confusion matrix (true class by row, predicted by column) as HTML."""
    matrix = trial.user_attrs.get(keys.VAL_CONFUSION)
    if not isinstance(matrix, list) or not matrix:
        return ""
    names = trial.user_attrs.get(keys.CLASSES)
    if not isinstance(names, list) or len(names) != len(matrix):
        names = list(range(len(matrix)))
    esc = html.escape
    head = "".join(f"<th>{esc(str(n))}</th>" for n in names)
    body = "".join(
        f"<tr><th>{esc(str(n))}</th>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
        for n, row in zip(names, matrix, strict=True)
    )
    return (
        f"<h2>Confusion matrix of trial {trial.number} (validation, best epoch)</h2>"
        f"<table><tr><th>true \\ predicted</th>{head}</tr>{body}</table>"
    )


def pareto(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The non-dominated ``(loss, size, number)`` points (both minimised), by size."""
    front: list[tuple[float, float, int]] = []
    for loss, size, number in sorted(points, key=lambda p: (p[1], p[0], p[2])):
        if not front or loss < front[-1][0]:
            front.append((loss, size, number))
    return front


def _width(t: optuna.trial.FrozenTrial) -> float | None:
    cfg = t.user_attrs.get(keys.MODEL_CONFIG)
    if isinstance(cfg, dict) and cfg.get("hidden_sizes"):
        sizes = cfg["hidden_sizes"]
        return float(statistics.mean(sizes))
    return None


class _Figures:
    """The report's figures, each saved into ``folder`` as it is drawn (``out``: file name
    and caption, in order)."""

    def __init__(self, study: optuna.Study, folder: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.ticker = plt, matplotlib.ticker
        self.study, self.folder = study, folder
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        finished = study.get_trials(deepcopy=False, states=states)
        # The search's own trials: a confirmation (a candidate trained again) is shown as such.
        self.done = [t for t in finished if math.isfinite(_loss(t)) and not keys.is_confirm(t)]
        self.confirms = [t for t in finished if math.isfinite(_loss(t)) and keys.is_confirm(t)]
        self.complete = [t for t in self.done if t.state == TrialState.COMPLETE]
        self.out: list[tuple[str, str]] = []

    def save(self, fig: Any, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(self.folder / name, dpi=110)
        self.plt.close(fig)
        self.out.append((name, caption))

    def history(self) -> None:
        fig, ax = self.plt.subplots(figsize=(7, 4))
        for state, marker, color in (
            (TrialState.COMPLETE, "o", "C0"),
            (TrialState.PRUNED, "x", "C3"),
        ):
            ts = [t for t in self.done if t.state == state]
            losses = [_loss(t) for t in ts]
            label = state.name.lower()
            ax.scatter([t.number for t in ts], losses, marker=marker, c=color, label=label)
        best, running = [], math.inf
        for t in sorted(self.complete, key=lambda t: t.number):
            running = min(running, _loss(t))
            best.append((t.number, running))
        if best:
            ax.step(
                *zip(*best, strict=True), where="post", c="k", label="the search's best so far"
            )
        if self.confirms:
            ax.scatter(
                [t.number for t in self.confirms],
                [_loss(t) for t in self.confirms],
                marker="^",
                c="C2",
                label="confirmation (a candidate again, new seed)",
            )
        ax.set_xlabel("trial")
        ax.set_ylabel("validation loss (pruned: at the epoch it stopped)")
        ax.set_yscale("log")
        ax.legend()
        self.save(fig, "history.png", "Optimization history")

    def by(
        self,
        key: Any,
        name: str,
        label: str,
        caption: str,
        value: Any = _loss,
        ylabel: str = "validation loss",
    ) -> None:
        """Complete trials as boxes by ``key``; pruned ones as crosses at the loss they
        stopped at, so a value (a depth, say) whose every trial was pruned still shows."""
        groups: dict[float, list[float]] = {}
        stopped: dict[float, list[float]] = {}
        for t in self.done:
            k, v = key(t), value(t)
            if k is not None and math.isfinite(v):
                into = groups if t.state == TrialState.COMPLETE else stopped
                into.setdefault(k, []).append(v)
        found = sorted(set(groups) | set(stopped))
        if not found:
            return
        fig, ax = self.plt.subplots(figsize=(7, 4))
        boxed = [i for i, k in enumerate(found) if k in groups]
        if boxed:
            ax.boxplot([groups[found[i]] for i in boxed], positions=boxed, widths=0.5)
        for i, k in enumerate(found):
            if k in groups:
                ax.scatter([i] * len(groups[k]), groups[k], c="C0", alpha=0.6, s=14)
            if k in stopped:
                xs = [i + 0.15] * len(stopped[k])
                ax.scatter(xs, stopped[k], c="C3", marker="x", s=14, alpha=0.6)
        ax.scatter([], [], c="C0", s=14, label="complete")
        ax.scatter([], [], c="C3", marker="x", s=14, label="pruned (at the epoch it stopped)")
        ax.set_xticks(range(len(found)), [f"{k:g}" for k in found])
        ax.set_xlim(-0.6, len(found) - 0.4)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        if value is _loss:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
        self.save(fig, name, caption)

    def importance(self) -> None:
        if len(self.complete) < 2:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "few trials in a regime" is expected here
                importances = optuna.importance.get_param_importances(self.study, target=_loss)
        except (ValueError, RuntimeError):
            return
        if not importances:
            return
        fig, ax = self.plt.subplots(figsize=(7, 0.5 + 0.4 * len(importances)))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="C2")
        ax.set_xlabel("importance (Optuna's default evaluator, complete trials)")
        self.save(fig, "importance.png", "Parameter importances")

    def size(self, picks: dict[str, int]) -> None:
        sized = [
            (_loss(t), float(t.user_attrs[keys.PARAM_COUNT]), t.number)
            for t in self.complete
            if isinstance(t.user_attrs.get(keys.PARAM_COUNT), (int, float))
        ]
        if not sized:
            return
        fig, ax = self.plt.subplots(figsize=(7, 4))
        ax.scatter([p[1] for p in sized], [p[0] for p in sized], c="C0", alpha=0.6, s=16)
        front = pareto(sized)
        front_label = "Pareto front (loss, parameters)"
        ax.step(
            [p[1] for p in front], [p[0] for p in front], where="post", c="k", label=front_label
        )
        _mark_picks(ax, sized, picks)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(self.ticker.NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation loss (complete trials)")
        ax.legend()
        self.save(fig, "size.png", "Validation loss against model size, with the picks marked")

    def curves(self, picks: dict[str, int]) -> None:
        top = sorted(self.complete, key=_loss)[:5]
        if not top:
            return
        fig, ax = self.plt.subplots(figsize=(7, 4))
        for t in top:
            points = trial_curve(t)
            steps = sorted(points)
            tag = " (picked)" if t.number in picks.values() else ""
            layers = trial_layers(t)
            depth = "? layers" if layers is None else counted(layers, "layer")
            label = f"trial {t.number}: {depth}{tag}"
            ax.plot(steps, [points[s] for s in steps], marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.legend()
        self.save(fig, "curves.png", "Learning curves of the five best trials")


def _mark_picks(ax: Any, sized: list[tuple[float, float, int]], picks: dict[str, int]) -> None:
    """Rings and labels the picked trials among ``sized`` (loss, parameters, number). Labels
    point into the plot: left of a point in the right half, below one in the upper half (log
    axes), so that none runs past the axes."""
    by_number = {p[2]: p for p in sized}
    log_x = [math.log(p[1]) for p in sized]
    log_y = [math.log(p[0]) for p in sized]
    mid_x, mid_y = (min(log_x) + max(log_x)) / 2, (min(log_y) + max(log_y)) / 2
    for i, (label, number) in enumerate(picks.items()):
        if number not in by_number:
            continue
        loss, size, _ = by_number[number]
        ax.scatter([size], [loss], s=120, facecolors="none", edgecolors=f"C{i + 1}", lw=2)
        right, high = math.log(size) > mid_x, math.log(loss) > mid_y
        ax.annotate(
            f"{label}: trial {number}",
            (size, loss),
            textcoords="offset points",
            xytext=(-8 if right else 8, (-1 if high else 1) * (10 + 12 * i)),
            ha="right" if right else "left",
            va="top" if high else "bottom",
            color=f"C{i + 1}",
            annotation_clip=False,
        )


def _plots(study: optuna.Study, folder: Path, picks: dict[str, int]) -> list[tuple[str, str]]:
    figures = _Figures(study, folder)
    figures.history()
    if any(isinstance(t.user_attrs.get("val_accuracy"), float) for t in figures.done):
        figures.by(
            trial_layers,
            "accuracy.png",
            "layer count",
            "Validation accuracy by layer count: the depth answer of a classification",
            value=_accuracy,
            ylabel="validation accuracy (best epoch)",
        )
    caption = "Validation loss by layer count: the depth answer"
    figures.by(trial_layers, "depth.png", "layer count", caption)
    width = "hidden size (mean over layers)"
    figures.by(_width, "width.png", width, "Validation loss by hidden size")
    figures.importance()
    figures.size(picks)
    figures.curves(picks)
    return figures.out


def _depth_table(study: optuna.Study) -> list[tuple[int, int, int, str, str, str]]:
    """Per layer count: trials, pruned, best loss and median loss (complete trials), and a
    classification's best validation accuracy (empty for other tasks)."""
    rows: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if keys.is_confirm(t):
            continue  # the search's trials: confirmations are the answer's
        layers = trial_layers(t)
        if layers is not None:
            rows.setdefault(layers, []).append(t)
    table = []
    for layers in sorted(rows):
        ts = rows[layers]
        values = [_loss(t) for t in ts if t.state == TrialState.COMPLETE and t.values]
        stopped = [_loss(t) for t in ts if t.state == TrialState.PRUNED and t.values]
        pruned = sum(t.state == TrialState.PRUNED for t in ts)
        # A depth whose every trial was pruned: its lowest loss at the epoch a trial stopped.
        best = (
            f"{min(values):.6g}"
            if values
            else (f"{min(stopped):.6g} (pruned)" if stopped else "-")
        )
        median = f"{statistics.median(values):.6g}" if values else "- (none complete)"
        accuracies = [
            a for t in ts if t.state == TrialState.COMPLETE if math.isfinite(a := _accuracy(t))
        ]
        accuracy = f"{max(accuracies):.4g}" if accuracies else ""
        table.append((layers, len(ts), pruned, best, median, accuracy))
    return table


def write_report(study_name: str, storage_url: str, output_dir: str | Path) -> list[Path]:
    """Writes ``index.html`` and its PNGs; returns the files written."""
    study = open_study(study_name, storage_url)
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {folder}: {e.strerror or e}") from e
    picks = {
        "best": pick_trial(study, storage_url, "best").number,
        "smallest within the noise": pick_trial(
            study, storage_url, "smallest-within=noise"
        ).number,
        "smallest within 2%": pick_trial(study, storage_url, "smallest-within=2%").number,
    }
    plots = _plots(study, folder, picks)
    found = answer_of(study)
    if plot_answer(found, folder / "answer.png"):
        plots.insert(0, ("answer.png", "Depth curve of the confirmed candidates, 95% intervals"))
    answer_block = (
        f"<h2>The answer</h2><pre>{html.escape(answer_text(found, study_name))}</pre>"
        if len(study.directions) == 1
        else ""
    )
    if found.verdict is not None:
        said = html.escape(found.verdict.text)
        answer_block += f"<p><strong>{said}</strong></p>" if not found.verdict.beat else ""
    body = _body(study, storage_url, picks, plots, answer_block)
    (folder / "index.html").write_text(_page(study_name, body), encoding="utf-8")
    return [folder / "index.html", *(folder / name for name, _ in plots)]


def _pick_rows(picks: dict[str, int], by_number: dict[int, optuna.trial.FrozenTrial]) -> str:
    esc = html.escape
    return "".join(
        f"<tr><td>{esc(label)}</td><td>{n}</td><td>{_loss(by_number[n]):.6g}</td>"
        f"<td>{trial_layers(by_number[n])}</td>"
        f"<td>{esc(str(by_number[n].user_attrs.get(keys.MODEL_CONFIG, {}).get('hidden_sizes')))}"
        "</td>"
        f"<td>{by_number[n].user_attrs.get(keys.PARAM_COUNT)}</td></tr>"
        for label, n in picks.items()
    )


def _depth_section(study: optuna.Study) -> tuple[str, bool]:
    """The "How deep?" table, and whether the study is a classification."""
    depth = _depth_table(study)
    classify = any(row[5] for row in depth)
    rows = "".join(
        f"<tr><td>{layers}</td><td>{n}</td><td>{pruned}</td><td>{best}</td><td>{median}</td>"
        + (f"<td>{accuracy}</td>" if classify else "")
        + "</tr>"
        for layers, n, pruned, best, median, accuracy in depth
    )
    accuracy_head = "<th>best accuracy</th>" if classify else ""
    table = (
        "<h2>How deep?</h2>\n"
        "<table><tr><th>layers</th><th>trials</th><th>pruned</th><th>best loss</th>\n"
        f"<th>median loss (complete)</th>{accuracy_head}</tr>{rows}</table>"
    )
    return table, classify


def _body(
    study: optuna.Study,
    storage_url: str,
    picks: dict[str, int],
    plots: list[tuple[str, str]],
    answer_block: str,
) -> str:
    esc = html.escape
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    by_number = {t.number: t for t in trials}
    depth_table, classify = _depth_section(study)
    confusion = _confusion_table(by_number[picks["best"]]) if classify else ""
    figures = "".join(
        f'<figure><img src="{esc(name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
        "</figcaption></figure>"
        for name, caption in plots
    )
    summary = esc(str(study.user_attrs.get(keys.SUMMARY, "")))
    preempted = keys.Preemption(t.user_attrs for t in trials).line()
    preempted_line = f"<p>{esc(preempted)}.</p>" if preempted else ""
    front_line = ""
    if len(study.directions) > 1:
        front_line = (
            f"<p>Pareto front ({esc(', '.join(metric_names(study)))}), "
            f"{counted(len(study.best_trials), 'trial')}: {esc(describe_front(study))}. "
            "The picks below are chosen from it.</p>"
        )
    written = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<p>{summary}</p>
<p>Storage {esc(mask_url(storage_url))}; {counted(len(trials), "trial")}:
{counts["complete"]} complete,
{counts["pruned"]} pruned, {counts["fail"]} failed. Written
{written}.</p>
{preempted_line}
{answer_block}
<h2>Picked models</h2>
{front_line}
<table><tr><th>pick</th><th>trial</th><th>val loss</th><th>layers</th><th>hidden sizes</th>
<th>parameters</th></tr>{_pick_rows(picks, by_number)}</table>
{depth_table}
{confusion}
{figures}"""


def _page(study_name: str, body: str) -> str:
    esc = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>depthsearch report: {esc(study_name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Study {esc(study_name)}</h1>
{body}
</body></html>
"""
