"""Commands that read a study: ``export``, ``predict``, ``dashboard``, ``status``, ``trials``,
``report``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from depthsearch._text import counted, spreadsheet_cells
from depthsearch.cli._base import (
    _user_errors,
    data_option,
    main,
    storage_option,
    study_option,
)
from depthsearch.errors import InputError


@main.command()
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default=None,
    help="File (default best.json), or folder with --retrain (default best/).",
)
@click.option(
    "--pick",
    default="smallest-within=noise",
    show_default=True,
    help="'smallest-within=noise' (the smallest model whose loss is within two standard errors "
    "of the best's: one the validation part cannot tell from it), 'best' (the lowest loss), "
    "'smallest-within=P%' (within P% of the best loss), 'confirmed' (the answer's "
    "recommendation, after `confirm`) or 'confirmed:smallest-within=P%' (on the confirmed "
    "means).",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Train the picked config again and save model.pt and config.json.",
)
@click.option(
    "--format",
    "formats",
    type=click.Choice(["torchscript", "onnx"]),
    multiple=True,
    help="With --retrain: also write the model as TorchScript (model.ts) or ONNX "
    "(model.onnx), checked against it; repeat for both.",
)
@click.option(
    "--register",
    metavar="NAME",
    default=None,
    help="With --retrain: log the model to the study's MLflow server ([tracking] mlflow) and "
    "register it in the Model Registry as NAME.",
)
@click.option(
    "--refit",
    type=click.Choice(["train", "all"]),
    default="train",
    show_default=True,
    help="With --retrain: train on the training part (the trial's own model), or on the "
    "training and validation parts together ('all', for users who hold their own test file).",
)
@data_option
@_user_errors
def export(
    study_name: str,
    storage: str | None,
    output: str | None,
    pick: str,
    retrain: bool,
    formats: tuple[str, ...],
    register: str | None,
    refit: str,
    data_path: str | None,
) -> None:
    """Write the picked trial's model config, training config, metrics and origin.

    With --retrain, also train that config again on the study's data (its training windows,
    the trial's seed, for the trial's best epoch count) and save the model.
    """
    from depthsearch.results.export import export_best, parse_pick, retrain_best
    from depthsearch.storage import resolve_storage

    parse_pick(pick)  # a wrong pick is refused before anything is read
    if (formats or register is not None or refit != "train") and not retrain:
        which = "--format" if formats else "--register" if register else "--refit"
        raise InputError(f"{which} takes a retrained model: add --retrain")
    url = resolve_storage(storage)
    if retrain:
        folder = output or "best"
        doc = retrain_best(
            study_name,
            url,
            folder,
            pick=pick,
            data_path=data_path,
            formats=formats,
            register=register,
            refit=refit,
        )
        from depthsearch.search.trials import metrics_text

        r = doc["retrain"]
        where = Path(folder)
        kind = doc.get("task", {}).get("kind", "forecast")
        unit = "window" if kind == "forecast" else "sequence"
        parts = "training and validation parts" if refit == "all" else "training part"
        scored = (
            f"val_loss={r['val_loss']:.6g}{metrics_text(r)}"
            if "val_loss" in r
            else "the validation part was trained on: not scored"
        )
        click.echo(
            f"wrote {where / 'model.pt'} and {where / 'config.json'}: trial "
            f"{doc['origin']['trial']} retrained on the {parts} of {r['data']} "
            f"({counted(r['train_windows'], unit)}, {counted(r['epochs'], 'epoch')} "
            f"on {r['device']}): {scored} (the trial reached "
            f"val_loss={doc['metrics']['val_loss']:.6g}{metrics_text(doc['metrics'])})"
        )
        tested = {k: v for k, v in r.items() if k.startswith("test_")}
        if tested:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in tested.items())
            click.echo(f"held-out test part (never seen by the search or the pick): {shown}")
        if "confirmed" in doc:
            c = doc["confirmed"]
            means = ", ".join(
                f"{k}={v['mean']:.4g} ± {v['half_width_95']:.2g}"
                for k, v in c.items()
                if isinstance(v, dict)
            )
            click.echo(f"confirmed over {c['seeds']} seeds (95% CI): {means}")
        served = {
            "torchscript": "TorchScript: torch.jit.load, no depthsearch needed",
            "onnx": "ONNX: ONNX Runtime or any ONNX server, no depthsearch needed",
        }
        for name, made in doc.get("exports", {}).items():
            click.echo(
                f"wrote {where / made['file']} ({served[name]}); checked: it matches the "
                f"model within {made['max_abs_diff']:.2g} on random inputs of 4 batch sizes "
                "and lengths"
            )
        if "registered" in doc:
            reg = doc["registered"]
            click.echo(
                f"registered {reg['model_uri']} in MLflow at {reg['tracking_uri']} (run "
                f"{reg['run_id']}): mlflow.pytorch.load_model({reg['model_uri']!r})"
            )
        return
    path = output or "best.json"
    doc = export_best(study_name, url, path, pick=pick)
    m = doc["metrics"]
    click.echo(
        f"wrote {path}: trial {doc['origin']['trial']} of {study_name!r} (pick {pick}), "
        f"val_loss={m['val_loss']:.6g}, layers={len(doc['model']['hidden_sizes'])}, "
        f"hidden_sizes={doc['model']['hidden_sizes']}, {m['param_count']} parameters"
    )


@main.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option(
    "--csv",
    "--data",
    "csv_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="New data in the study's format: a CSV or Parquet table with the study's columns "
    "(and its id and time columns), or an NPZ with X (and lengths).",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Output CSV (default: stdout).",
)
@click.option(
    "--runtime",
    type=click.Choice(["torch", "onnxruntime"]),
    default="torch",
    show_default=True,
    help="Run model.pt with PyTorch, or model.onnx (export --format onnx) with ONNX Runtime.",
)
@_user_errors
def predict(model_dir: str, csv_path: str, output: str | None, runtime: str) -> None:
    """Predict with a model saved by `export --retrain`: one row per window of a forecast
    (per series of a panel), per id (or NPZ sequence) of a classification or regression."""
    from depthsearch.learn.predictor import predict_csv

    frame = spreadsheet_cells(predict_csv(model_dir, csv_path, runtime=runtime))
    if output is None:
        click.echo(frame.to_csv(index=False), nl=False)
        return
    try:
        frame.to_csv(output, index=False)
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from e
    click.echo(f"wrote {output}: {len(frame)} predictions")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Let the dashboard change the database (delete or rename studies, write notes); "
    "without it every such request is refused (405).",
)
@_user_errors
def dashboard(storage: str | None, host: str, port: int, allow_writes: bool) -> None:
    """Serve optuna-dashboard over the study database (localhost unless told otherwise).

    Read-only unless --allow-writes.
    """
    from depthsearch.results.dashboard import serve
    from depthsearch.storage import resolve_storage

    serve(
        resolve_storage(storage),
        host=host,
        port=port,
        on_ready=lambda url: click.echo(f"dashboard: {url}", err=False),
        allow_writes=allow_writes,
    )


@main.command()
@study_option
@storage_option
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    default=None,
    metavar="S",
    help="Show it again every S seconds until Ctrl-C or the budget is met.",
)
@_user_errors
def status(study_name: str, storage: str | None, watch: float | None) -> None:
    """Budget, pace, ETA, best so far, and each running trial with its worker and heartbeat."""
    import time

    from depthsearch.results.status import study_status
    from depthsearch.storage import resolve_storage

    url = resolve_storage(storage)
    while True:
        shown = study_status(study_name, url)
        if watch is not None and sys.stdout.isatty():
            click.clear()
        click.echo(shown.text)
        if watch is None or shown.budget_met:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return
        click.echo()


@main.command()
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default=None,
    help="trials.csv, trials.parquet or trials.json (default: a table on stdout).",
)
@_user_errors
def trials(study_name: str, storage: str | None, output: str | None) -> None:
    """One row per trial: number, state, value, params, user attributes, duration."""
    from depthsearch.results.table import trials_frame, write_trials
    from depthsearch.storage import resolve_storage

    url = resolve_storage(storage)
    if output is None:
        frame = trials_frame(study_name, url)
        cols = [
            c
            for c in frame.columns
            if not c.startswith("user_attrs_model_config")
            and not c.endswith("_curve")
            and c != "user_attrs_val_confusion"
        ]
        click.echo(frame[cols].to_string(index=False))
        return
    frame = write_trials(study_name, url, output)
    click.echo(
        f"wrote {output}: {counted(len(frame), 'trial')}, {counted(len(frame.columns), 'column')}"
    )


@main.command()
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default="report",
    show_default=True,
    type=click.Path(dir_okay=True, file_okay=False),
)
@_user_errors
def report(study_name: str, storage: str | None, output: str) -> None:
    """Write index.html and PNGs: history, loss by depth and width, importances, curves."""
    from depthsearch.results.report import write_report
    from depthsearch.storage import resolve_storage

    files = write_report(study_name, resolve_storage(storage), output)
    click.echo(f"wrote {files[0]} and {len(files) - 1} plots")
