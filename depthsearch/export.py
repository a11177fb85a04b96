"""Best trial -> a config file that rebuilds the very same model elsewhere."""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from depthsearch.errors import DepthsearchError
from depthsearch.model import ModelConfig, StackedLSTM
from depthsearch.storage import mask_url, open_storage
from depthsearch.study import SPEC_ATTR, no_such_study

__all__ = [
    "FORMAT",
    "best_config",
    "describe_front",
    "export_best",
    "load_config",
    "load_model",
    "metric_names",
    "pick_trial",
    "predict_csv",
    "read_export",
    "retrain_best",
]

FORMAT = "depthsearch.config/1"


def _open(study_name: str, storage_url: str) -> optuna.Study:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise no_such_study(storage, study_name, storage_url) from None


def pick_trial(
    study: optuna.Study, storage_url: str, pick: str = "best"
) -> optuna.trial.FrozenTrial:
    """The trial that ``pick`` names among the complete ones.

    ``best``: the lowest validation loss. ``smallest-within=P%``: the fewest parameters among
    the trials whose loss is within P percent of the best (ties: the lower loss). On a
    multi-objective study both choose from the Pareto front (``study.best_trials``).
    """
    tolerance = None if pick == "best" else parse_pick(pick)
    pool = (
        study.best_trials
        if len(study.directions) > 1
        else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    )
    complete = [
        t
        for t in pool
        if t.values and math.isfinite(t.values[0]) and "model_config" in t.user_attrs
    ]
    if not complete:
        raise DepthsearchError(
            f"study {study.study_name!r} in {mask_url(storage_url)} has no complete trial yet; "
            "run more trials first"
        )
    best = min(complete, key=lambda t: (t.values[0], t.number))
    if tolerance is None:
        return best
    limit = best.values[0] + abs(best.values[0]) * tolerance
    near = [t for t in complete if t.values[0] <= limit]
    return min(near, key=lambda t: (t.user_attrs.get("param_count", 0), t.values[0], t.number))


def metric_names(study: optuna.Study) -> list[str]:
    """The study's objective names (``val_loss`` alone where none were set)."""
    names = study.metric_names
    return list(names) if names else ["val_loss"]


def describe_front(study: optuna.Study) -> str:
    """``trial 7 (0.0897, 3426), trial 1 (...)``: the Pareto front, best loss first."""
    return ", ".join(
        f"trial {t.number} ({', '.join(f'{v:.6g}' for v in t.values)})"
        for t in sorted(study.best_trials, key=lambda t: t.values)
    )


def parse_pick(pick: str) -> float:
    """``smallest-within=2%`` -> 0.02; anything else but ``best`` is refused."""
    prefix = "smallest-within="
    if pick.startswith(prefix) and pick.endswith("%"):
        try:
            value = float(pick[len(prefix) : -1])
        except ValueError:
            value = -1.0
        if value >= 0:
            return value / 100.0
    raise DepthsearchError(
        f"--pick must be 'best' or 'smallest-within=P%' (P >= 0, e.g. 2%), but got {pick!r}"
    )


def best_config(study_name: str, storage_url: str, *, pick: str = "best") -> dict[str, Any]:
    """The export document of the picked complete trial (see :func:`pick_trial`)."""
    study = _open(study_name, storage_url)
    trial = pick_trial(study, storage_url, pick)
    spec = study.user_attrs.get(SPEC_ATTR, {})
    attrs = trial.user_attrs
    train = dict(spec.get("train", {}))
    train.update(
        lr=trial.params.get("lr", spec.get("space", {}).get("lr")),
        batch_size=trial.params.get("batch_size", spec.get("space", {}).get("batch_size")),
        best_epoch=attrs.get("best_epoch"),
        seed=attrs.get("seed"),
    )
    return {
        "format": FORMAT,
        "model": attrs["model_config"],
        "train": train,
        "data": spec.get("data", {}),
        "metrics": {
            "val_loss": trial.values[0],
            "objectives": dict(zip(metric_names(study), trial.values, strict=True)),
            "param_count": attrs.get("param_count"),
            "epochs_trained": attrs.get("epochs_trained"),
            "best_epoch": attrs.get("best_epoch"),
            "seconds_per_epoch": attrs.get("seconds_per_epoch"),
        },
        "origin": {
            "study": study.study_name,
            "trial": trial.number,
            "params": trial.params,
            "storage": mask_url(storage_url),
            "pick": pick,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_best(
    study_name: str, storage_url: str, output: str | Path, *, pick: str = "best"
) -> dict[str, Any]:
    """Writes the picked trial's export document to ``output`` (JSON) and returns it."""
    doc = best_config(study_name, storage_url, pick=pick)
    _write_json(Path(output), doc)
    return doc


def read_export(path: str | Path) -> dict[str, Any]:
    """Reads an export document (as written by :func:`export_best`)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DepthsearchError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        raise DepthsearchError(f"{p}: not a depthsearch export ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "model" not in doc:
        raise DepthsearchError(f"{p}: not a depthsearch export (expected format {FORMAT!r})")
    return doc


def load_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of an exported config file (``best.json``)."""
    doc = read_export(path)
    try:
        return ModelConfig.from_dict(doc["model"])
    except ValueError as e:
        raise DepthsearchError(f"{path}: bad model config: {e}") from e


# --------------------------------------------------------------------------------------------
# A trained model: retrain the best config, save it, load it, predict with it.

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def retrain_best(
    study_name: str,
    storage_url: str,
    output_dir: str | Path,
    *,
    pick: str = "best",
    data_path: str | None = None,
) -> dict[str, Any]:
    """Trains the picked trial's config again and saves ``model.pt`` and ``config.json``.

    The model trains on the study's own data and split (its training windows), with the
    trial's seed, learning rate and batch size, for the trial's ``best_epoch`` epochs: on the
    CPU this reproduces the trial's model at its best epoch.

    Returns:
        The saved config document, with ``retrain`` holding the retrained validation loss.
    """
    import torch

    from depthsearch.data import prepare
    from depthsearch.model import build_model
    from depthsearch.study import read_spec
    from depthsearch.train import FitOptions, evaluate, fit, resolve_device

    doc = best_config(study_name, storage_url, pick=pick)
    spec = read_spec(study_name, storage_url, data_path=data_path)
    device = resolve_device(spec.train.device)
    data = prepare(spec.data, "cpu", seed=spec.seed)
    train = doc["train"]
    cfg = ModelConfig.from_dict(doc["model"])
    seed = int(train["seed"])
    torch.manual_seed(seed)
    model = build_model(cfg).to(device)
    epochs = int(train.get("best_epoch") or spec.train.max_epochs)
    options = FitOptions(
        lr=float(train["lr"]),
        batch_size=int(train["batch_size"]),
        max_epochs=epochs,
        grad_clip=spec.train.grad_clip,
        weight_decay=spec.train.weight_decay,
        amp=spec.train.amp,
        seed=seed,
    )
    on_device = data.to(device)
    fit(model, on_device, options)
    val_loss = evaluate(model, on_device.x_val, on_device.y_val, amp=spec.train.amp)
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / MODEL_FILE)
    except OSError as e:
        raise DepthsearchError(f"cannot write to {out}: {e.strerror or e}") from e
    doc["retrain"] = {
        "epochs": epochs,
        "device": str(device),
        "val_loss": val_loss,
        "data": spec.data.path or "synthetic series",
        "train_windows": int(data.x_train.shape[0]),
    }
    doc["scaler"] = data.scaler.to_dict()
    _write_json(out / CONFIG_FILE, doc)
    return doc


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise DepthsearchError(f"cannot write {path}: {e.strerror or e}") from e


def load_model(directory: str | Path) -> StackedLSTM:
    """Loads a model saved by ``depthsearch export --retrain`` (in eval mode, on the CPU).

    The weights are read with ``torch.load(..., weights_only=True)``: no pickled code runs.
    """
    import torch

    from depthsearch.model import build_model

    folder = Path(directory)
    cfg = load_config(folder / CONFIG_FILE)
    try:
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DepthsearchError(
            f"{folder / MODEL_FILE}: no such file (export with --retrain)"
        ) from None
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise DepthsearchError(
            f"{folder / MODEL_FILE} does not fit {folder / CONFIG_FILE}: {e}"
        ) from e
    return model.eval()


def predict_csv(directory: str | Path, csv: str | Path) -> pd.DataFrame:
    """Predictions of a saved model for every window of a CSV with the study's columns.

    Returns:
        One row per window: ``row`` (0-based index of the window's last input row in the CSV)
        and ``{target}+1`` ... ``{target}+horizon`` in the target's own units.
    """
    import numpy as np
    import torch

    from depthsearch.config import DataSpec
    from depthsearch.data import Scaler, input_windows, load_frame

    folder = Path(directory)
    doc = read_export(folder / CONFIG_FILE)
    if "scaler" not in doc:
        raise DepthsearchError(f"{folder / CONFIG_FILE} has no scaler: export with --retrain")
    scaler = Scaler.from_dict(doc["scaler"])
    data = doc["data"]
    window = int(data["window"])
    spec = DataSpec(
        source="csv",
        path=str(csv),
        target=scaler.target,
        features=tuple(scaler.columns) if tuple(scaler.columns) != (scaler.target,) else (),
        window=window,
        horizon=int(data["horizon"]),
    )
    frame = load_frame(spec, columns=scaler.columns)  # the target only when it is an input
    if len(frame) < window:
        raise DepthsearchError(f"{csv}: {len(frame)} rows, but one window needs {window}")
    inputs = scaler.transform(frame[list(scaler.columns)].to_numpy(dtype=np.float64))
    x = input_windows(inputs, window)
    model = load_model(folder)
    with torch.inference_mode():
        y = model(x).numpy()
    values = scaler.inverse_target(y)
    out = pd.DataFrame(
        values, columns=[f"{scaler.target}+{i + 1}" for i in range(values.shape[1])]
    )
    out.insert(0, "row", np.arange(window - 1, len(frame)))
    return out
