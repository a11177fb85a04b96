"""Predictions in the task's own terms from a folder written by ``depthsearch export
--retrain``: forecasts per window (per series of a panel), labels with their probabilities,
values per sequence. Torch, numpy and pandas only, as :mod:`depthsearch.learn.saved`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from depthsearch.errors import InputError
from depthsearch.learn.data import load_frame
from depthsearch.learn.evaluate import run_batch
from depthsearch.learn.model import StackedLSTM
from depthsearch.learn.portable import ONNX_FILE, OnnxModel
from depthsearch.learn.saved import Forecaster, load_model, read_retrained
from depthsearch.learn.scaling import Scaler, column_stats, fit_scaler, training_rows
from depthsearch.learn.sources import groups, read_npz, read_table
from depthsearch.learn.tasks import pad_sequences
from depthsearch.spec import DataSpec

__all__ = ["RUNTIMES", "Predictor", "predict_csv"]

#: What runs the model: PyTorch (``model.pt``) or ONNX Runtime (``model.onnx``).
RUNTIMES = ("torch", "onnxruntime")

_log = logging.getLogger(__name__)


class Predictor:
    """A saved model with what it needs to answer in the task's own terms.

    ``Predictor.load("best/")`` reads a folder written by ``depthsearch export --retrain``;
    :meth:`predict` takes new data in the study's format (a frame, or a CSV, Parquet or NPZ
    file) and gives one row per sample: a forecast per window (with the series' id in a
    panel) in the target's own units, a label and a probability per class, or a value per
    sequence in the target's units.
    """

    def __init__(
        self,
        model: StackedLSTM | OnnxModel,
        scaler: Scaler,
        data: Mapping[str, Any],
        *,
        kind: str = "forecast",
        classes: tuple[Any, ...] = (),
    ) -> None:
        self.model = model
        self.scaler = scaler
        self.data = dict(data)
        self.kind = kind
        self.classes = classes

    @classmethod
    def load(cls, directory: str | Path, *, runtime: str = "torch") -> Predictor:
        """From a folder written by ``depthsearch export --retrain``; ``runtime``
        ``"onnxruntime"`` runs its ``model.onnx`` (``--format onnx``) with ONNX Runtime
        instead of PyTorch."""
        folder = Path(directory)
        doc = read_retrained(folder)
        task = doc.get("task", {})
        if runtime not in RUNTIMES:
            raise InputError(f"unknown runtime {runtime!r}; allowed are {list(RUNTIMES)}")
        return cls(
            load_model(folder) if runtime == "torch" else OnnxModel(folder / ONNX_FILE),
            Scaler.from_dict(doc["scaler"]),
            doc.get("data", {}),
            kind=str(task.get("kind", "forecast")),
            classes=tuple(task.get("classes", ())),
        )

    @property
    def columns(self) -> list[str]:
        """The columns a frame must hold (the model's inputs)."""
        return list(self.scaler.columns)

    def _spec(self, path: str | Path | None = None) -> DataSpec:
        data = self.data
        source = str(data.get("source", "csv"))
        if path is not None:
            suffix = Path(path).suffix.lower()
            source = {".parquet": "parquet", ".npz": "npz"}.get(suffix, "csv")
        elif source == "synthetic":
            source = "csv"
        keys = ("target", "id", "time", "missing", "max_length", "window", "horizon")
        known = {k: data[k] for k in keys if data.get(k) is not None}
        if isinstance(known.get("target"), list):  # a regression of several columns
            known["target"] = known["target"][0]
        return DataSpec(source=source, path=str(path or "<frame>"), **known)

    def _outputs(self, x: torch.Tensor, lengths: torch.Tensor | None) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), 1024):
                part = slice(start, start + 1024)
                out.append(
                    run_batch(self.model, x[part], None if lengths is None else lengths[part])
                )
        return torch.cat(out).float().numpy()

    def _per_sequence(
        self, keys: list[Any], seqs: list[np.ndarray], key_name: str
    ) -> pd.DataFrame:
        limit = int(self.data.get("max_length") or 0)
        if limit:
            seqs = [q[-limit:] for q in seqs]
        out = self._outputs(*pad_sequences(seqs, self.scaler))
        frame = pd.DataFrame({key_name: keys})
        if self.kind == "classify":
            probs = torch.softmax(torch.from_numpy(out), dim=-1).numpy()
            frame["label"] = [self.classes[i] for i in probs.argmax(-1)]
            for i, name in enumerate(self.classes):
                frame[f"prob_{name}"] = probs[:, i]
            return frame
        values = self.scaler.inverse_target(out)
        target = self.data.get("target") or "y"
        names = (
            [str(t) for t in target]
            if isinstance(target, list) and len(target) == values.shape[1]
            else [str(target)]
            if values.shape[1] == 1
            else [f"{target}_{j}" for j in range(values.shape[1])]
        )
        for j, name in enumerate(names):
            frame[name] = values[:, j]
        return frame

    def _panel(self, parts: list[Any], spec: DataSpec) -> pd.DataFrame:
        window, horizon = spec.window, spec.horizon
        rows = []
        for g in parts:
            if len(g.values) < window:
                raise InputError(
                    f"id {g.key!r} has {len(g.values)} rows, but one window needs {window}"
                )
            own = self.scaler.for_series(g.key)
            if own is None:
                if self.scaler.series:
                    _log.info("id %r was not in the study: scaled on its own rows", g.key)
                    own = _own_scaler(self.scaler, g.values, spec)
                else:
                    own = self.scaler
            frame = pd.DataFrame(
                g.values, columns=self.columns, index=pd.Index(g.times, name=spec.time or "row")
            )
            part = Forecaster(self.model, own, window, horizon).predict_windows(frame)
            part = part.reset_index()
            part.insert(0, spec.id or "id", g.key)
            rows.append(part)
        return pd.concat(rows, ignore_index=True)

    def predict(self, data: pd.DataFrame | str | Path) -> pd.DataFrame:
        """Predictions for new data in the study's format: a frame (the table's columns) or
        the path of a CSV, Parquet or NPZ file. One row per window (forecast) or per id
        (classify, regress; per sequence of an NPZ)."""
        path = None if isinstance(data, pd.DataFrame) else Path(data)
        spec = self._spec(path)
        where = path if path is not None else "the frame"
        if spec.source == "npz":
            arrays = read_npz(spec, need_y=False)
            if arrays.x.shape[2] != len(self.columns):
                raise InputError(
                    f"{path}: X has {arrays.x.shape[2]} features per step, but the model was "
                    f"trained on {len(self.columns)}"
                )
            seqs = [arrays.x[i, : arrays.lengths[i]] for i in range(len(arrays.x))]
            return self._per_sequence(list(range(len(seqs))), seqs, "sequence")
        if self.kind == "forecast" and spec.id is None:
            if path is None:
                assert isinstance(data, pd.DataFrame)
                return Forecaster(
                    self.model, self.scaler, spec.window, spec.horizon
                ).predict_windows(data)
            return _forecast_file(self, spec)
        frame = data if isinstance(data, pd.DataFrame) else read_table(spec, path)
        parts = groups(frame, spec, self.columns, where=where)
        if self.kind == "forecast":
            return self._panel(parts, spec)
        return self._per_sequence(
            [g.key for g in parts], [g.values for g in parts], spec.id or "id"
        )


def _own_scaler(scaler: Scaler, values: np.ndarray, spec: DataSpec) -> Scaler:
    """A series' scaler fitted on its own rows (a panel's id the study never saw), as the
    study fits one on a series' training rows; a target that is no input keeps the study's
    statistics."""
    if scaler.target in scaler.columns:
        target = values[:, scaler.columns.index(scaler.target)]
        return fit_scaler(training_rows(values, target, len(values), spec), spec)
    mean, std = column_stats(values)
    return Scaler(scaler.columns, mean, std, scaler.target, scaler.target_mean, scaler.target_std)


def _forecast_file(predictor: Predictor, spec: DataSpec) -> pd.DataFrame:
    """One series from a file: a forecast per window, beside the file's time column."""
    scaler = predictor.scaler
    spec = dataclasses.replace(
        spec,
        target=scaler.target,
        features=tuple(scaler.columns) if tuple(scaler.columns) != (scaler.target,) else (),
    )
    # The target only when it is an input; the file's time column as the index.
    frame = load_frame(spec, columns=scaler.columns, timed=True)
    if len(frame) < spec.window:
        raise InputError(f"{spec.path}: {len(frame)} rows, but one window needs {spec.window}")
    out = Forecaster(predictor.model, scaler, spec.window, spec.horizon).predict_windows(frame)
    return out.rename_axis(out.index.name or "row").reset_index()


def predict_csv(directory: str | Path, csv: str | Path, *, runtime: str = "torch") -> pd.DataFrame:
    """Predictions of a saved model for a file in the study's format (CSV, Parquet or NPZ):
    see :meth:`Predictor.predict`.

    A forecast of one series gives one row per window: the file's time column at the
    window's last input row (its first column that is not an input, e.g. ``month``; else
    ``row``, the 0-based row number) and ``{target}+1`` ... ``{target}+horizon`` in the
    target's own units.
    """
    return Predictor.load(directory, runtime=runtime).predict(csv)
