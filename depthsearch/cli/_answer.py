"""``confirm`` (queue the best candidates again with new seeds) and ``answer`` (what they
say, with 95 % intervals, beside the baselines)."""

from __future__ import annotations

import time

import click

from depthsearch._text import counted, json_text
from depthsearch.cli._base import _user_errors, data_option, main, storage_option, study_option
from depthsearch.errors import InputError


@main.command()
@study_option
@storage_option
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Confirm the N best candidates of the search.",
)
@click.option(
    "--per-depth", is_flag=True, help="Confirm the best candidate of every depth instead."
)
@click.option(
    "--seeds",
    type=click.IntRange(min=2, max=1000),
    default=5,
    show_default=True,
    help="Re-trainings per candidate, each with a new seed (counting those already queued).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Run the queued trials here (with any other worker), wait for all, print the answer.",
)
@click.option("--device", default=None, help="With --wait: cpu, cuda or cuda:N.")
@data_option
@_user_errors
def confirm(
    study_name: str,
    storage: str | None,
    top: int,
    per_depth: bool,
    seeds: int,
    wait: bool,
    device: str | None,
    data_path: str | None,
) -> None:
    """Queue full re-trainings of the search's best candidates with new seeds.

    They are trials of the same study, tagged `confirm` (fixed parameters, never pruned,
    outside the search's budget), scored on the held-out test part at their best epoch: any
    running or future worker of the study runs them. Then `depthsearch answer`.
    """
    from depthsearch.results.answer import answer_of, answer_text, model_label
    from depthsearch.storage import resolve_storage
    from depthsearch.studies import load_study
    from depthsearch.worker.confirm import enqueue_confirmations

    url = resolve_storage(storage)
    study, spec = load_study(study_name, url, sampler_seed=None, data_path=data_path)
    if spec.multi_objective:
        raise InputError(
            f"study {study_name!r} optimises {list(spec.objectives)} (a Pareto front): "
            "confirm picks candidates by one objective; use a single-objective study"
        )
    queued = enqueue_confirmations(study, spec, url, top=top, seeds=seeds, per_depth=per_depth)
    if not queued.candidates:
        raise InputError(f"study {study_name!r} has no complete trial to confirm yet")
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    shown = ", ".join(
        f"trial {n} ({model_label(by_number[n])})" for n in queued.candidates if n in by_number
    )
    click.echo(
        f"queued {counted(len(queued.runs), 'confirmation trial')} of {shown} "
        f"({seeds} seeds each, those already queued or done kept); any worker of "
        f"{study_name!r} runs them"
    )
    if not wait:
        click.echo(f"then: depthsearch answer --study {study_name}")
        return
    from depthsearch.cli._base import _Progress
    from depthsearch.worker.run import run_worker

    progress = _Progress(spec.train.max_epochs)
    run_worker(
        study,
        spec,
        url,
        device=device,
        on_epoch=progress.epoch,
        tune_process=True,
        only_waiting=True,
    )
    progress.clear()
    while (pending := answer_of(study).pending) > 0:  # run by other workers
        click.echo(f"waiting for {counted(pending, 'confirmation trial')} run elsewhere")
        time.sleep(5.0)
    click.echo(answer_text(answer_of(study), study_name))


@main.command()
@study_option
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@_user_errors
def answer(study_name: str, storage: str | None, as_json: bool) -> None:
    """How many layers, how wide: the confirmed candidates' validation and test metrics over
    their seeds (95 % intervals), the search's own values beside them, the baselines, and a
    recommendation: the smallest depth whose interval overlaps the best's."""
    from depthsearch.results.answer import answer_json, answer_of, answer_text
    from depthsearch.storage import resolve_storage
    from depthsearch.studies import open_study

    study = open_study(study_name, resolve_storage(storage))
    result = answer_of(study)
    if as_json:
        click.echo(json_text(answer_json(result)))
        return
    click.echo(answer_text(result, study_name))
