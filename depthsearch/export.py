"""Best trial -> a config file that rebuilds the very same model elsewhere."""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from depthsearch.errors import DepthsearchError, StorageError
from depthsearch.model import ModelConfig
from depthsearch.storage import mask_url, open_storage
from depthsearch.study import SPEC_ATTR

__all__ = ["FORMAT", "best_config", "export_best", "load_config", "read_export"]

FORMAT = "depthsearch.config/1"


def _open(study_name: str, storage_url: str) -> optuna.Study:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in storage.get_all_studies()]
        raise StorageError(
            f"no study named {study_name!r} in {mask_url(storage_url)}; studies there: "
            f"{names if names else 'none'}"
        ) from None


def _best_trial(study: optuna.Study, storage_url: str) -> optuna.trial.FrozenTrial:
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and math.isfinite(t.values[0]) and "model_config" in t.user_attrs
    ]
    if not complete:
        raise DepthsearchError(
            f"study {study.study_name!r} in {mask_url(storage_url)} has no complete trial yet; "
            "run more trials first"
        )
    return min(complete, key=lambda t: (t.values[0], t.number))


def best_config(study_name: str, storage_url: str) -> dict[str, Any]:
    """The export document of a study's best complete trial (lowest validation loss)."""
    study = _open(study_name, storage_url)
    trial = _best_trial(study, storage_url)
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
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_best(study_name: str, storage_url: str, output: str | Path) -> dict[str, Any]:
    """Writes the best trial's export document to ``output`` (JSON) and returns it."""
    doc = best_config(study_name, storage_url)
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise DepthsearchError(f"cannot write {path}: {e.strerror or e}") from e
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
