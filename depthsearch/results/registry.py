"""``export --retrain --register NAME``: the retrained model in MLflow's Model Registry.

The model is logged with ``mlflow.pytorch`` as TorchScript (the archive ``--format
torchscript`` writes, checked against the model first), so ``mlflow.pytorch.load_model`` and
MLflow's own serving run it without depthsearch; the folder ``export`` wrote (``config.json``
with the scaler, ``model.pt``) goes beside it as artifacts, the retrain's metrics and the
model's config as the run's metrics and parameters. The run sits in the study's experiment,
under the study's run when the workers logged one.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthsearch._text import mask_uri, public_uri
from depthsearch.errors import InputError, RuntimeFailure
from depthsearch.results.portable import trace_checked
from depthsearch.tracking import Target
from depthsearch.tracking.client import client_env
from depthsearch.tracking.records import describe_error

__all__ = ["register_model"]


def _mlflow() -> Any:
    client_env()
    try:
        import mlflow
    except ImportError:
        raise InputError("--register needs MLflow: pip install 'depthsearch[mlflow]'") from None
    return mlflow


def _script_format(log_model: Any) -> dict[str, str]:
    """MLflow 3 saves ``pt2`` (torch.export) by default, which refuses a TorchScript module:
    it is saved as TorchScript (``pickle``, MLflow's name for ``torch.jit.save`` there)."""
    if "serialization_format" in inspect.signature(log_model).parameters:
        return {"serialization_format": "pickle"}
    return {}


def register_model(
    target: Target,
    name: str,
    model: nn.Module,
    folder: Path,
    doc: dict[str, Any],
    example: np.ndarray,
    *,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Logs ``model`` (with ``example``, a few of the study's inputs, as its input example and
    a signature of any batch size and length) and registers it as ``name``; returns
    ``{name, version, run_id, model_uri}``.

    Raises:
        InputError: MLflow is not installed, or ``name`` is empty.
        RuntimeFailure: the tracking server refused or did not answer (the exported folder
            is kept).
    """
    if not name.strip():
        raise InputError("--register needs a model name, but got an empty one")
    mlflow = _mlflow()
    _, steps, features = example.shape
    traced, _ = trace_checked(model, input_size=int(features), length=int(steps))
    signature = _signature(int(features), int(doc["model"]["output_size"]))
    origin = doc.get("origin", {})
    tags, params, metrics = _run_fields(target, doc, parent)
    try:
        mlflow.set_tracking_uri(target.uri)
        mlflow.set_experiment(target.experiment)
        with mlflow.start_run(
            run_name=f"export trial {origin.get('trial')} as {name}", tags=tags
        ) as run:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(folder), artifact_path="depthsearch")
            info = mlflow.pytorch.log_model(
                traced,
                **_script_format(mlflow.pytorch.log_model),
                name="model",
                signature=signature,
                input_example=np.ascontiguousarray(example, dtype=np.float32),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                registered_model_name=name,
            )
    except InputError:
        raise
    except Exception as e:
        raise RuntimeFailure(
            f"MLflow at {mask_uri(target.uri)} did not register {name!r} ({describe_error(e)}); "
            f"the export in {folder} is complete"
        ) from e
    return {
        "name": name,
        "version": int(info.registered_model_version),
        "run_id": run.info.run_id,
        "model_uri": f"models:/{name}/{info.registered_model_version}",
        "tracking_uri": public_uri(target.uri),
    }


def _run_fields(
    target: Target, doc: dict[str, Any], parent: dict[str, Any] | None
) -> tuple[dict[str, str], dict[str, Any], dict[str, float]]:
    """The export run's tags (under the study's run when it is this server's), the model's
    settings as parameters and the retrain's scores as metrics."""
    tags = {
        "depthsearch.study": target.study,
        "depthsearch.trial": str(doc.get("origin", {}).get("trial")),
        "depthsearch.role": "export",
        "depthsearch.storage": target.storage,
    }
    if parent and parent.get("uri") == public_uri(target.uri) and parent.get("run_id"):
        tags["mlflow.parentRunId"] = str(parent["run_id"])
    metrics = {
        f"retrain_{k}": float(v)
        for k, v in doc.get("retrain", {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    params = {f"model.{k}": v for k, v in doc.get("model", {}).items()}
    return tags, params, metrics


def _signature(features: int, outputs: int) -> Any:
    """Any batch size and length of ``features`` in; ``outputs`` per sequence out."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, outputs))]),
    )
