"""Predictions in the task's own terms from a folder written by ``depthsearch export
--retrain``: forecasts per window (per series of a panel), labels with their probabilities,
values per sequence. New data goes the way the study's went: the same reader
(:func:`~depthsearch.learn.read.read`), the saved scaler, the same windows and padding
(:mod:`~depthsearch.learn.samples`), with no split. Torch, numpy and pandas only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from depthsearch.errors import InputError
from depthsearch.learn.data import sequence_steps
from depthsearch.learn.evaluate import run_batch
from depthsearch.learn.model import StackedLSTM
from depthsearch.learn.portable import ONNX_FILE, OnnxModel
from depthsearch.learn.read import Sequences, read
from depthsearch.learn.samples import input_windows, pad
from depthsearch.learn.saved import load_model, read_retrained
from depthsearch.learn.scaling import Scaler, column_stats, fit_scaler, training_rows
from depthsearch.spec import DataSpec

__all__ = ["RUNTIMES", "Forecaster", "Predictor", "predict_csv"]

#: What runs the model: PyTorch (``model.pt``) or ONNX Runtime (``model.onnx``).
RUNTIMES = ("torch", "onnxruntime")
_BATCH = 1024

_log = logging.getLogger(__name__)

Model = StackedLSTM | OnnxModel


def _outputs(model: Model, x: torch.Tensor, lengths: torch.Tensor | None) -> NDArray[Any]:
    """The model's raw outputs ``(n, outputs)``, a batch of :data:`_BATCH` at a time."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), _BATCH):
            part = slice(start, start + _BATCH)
            out.append(run_batch(model, x[part], None if lengths is None else lengths[part]))
    return torch.cat(out).float().numpy()


def forecasts(
    model: Model, scaler: Scaler, values: NDArray[np.float64], window: int, where: str = ""
) -> NDArray[np.float64]:
    """A forecast per window of one series' rows ``values: (rows, len(scaler.columns))``, in
    the target's own units: ``(rows - window + 1, horizon)`` (one fewer window for a
    forecast of changes, whose first row has no change)."""
    first = int(scaler.difference)
    if len(values) < window + first:
        what = "one window of changes" if first else "one window"
        raise InputError(f"{where}{len(values)} rows, but {what} needs {window + first}")
    x = input_windows(scaler.inputs(values)[first:], window)
    out = scaler.inverse_target(_outputs(model, x, None))
    if scaler.difference:  # changes from each window's last value, added back
        out = out + values[first + window - 1 :, scaler.columns.index(scaler.target)][:, None]
    return out


def _own_scaler(scaler: Scaler, values: NDArray[np.float64]) -> Scaler:
    """A series' scaler fitted on its own rows (a panel's id the study never saw), as the
    study fits one on a series' training rows; a target that is no input keeps the study's
    statistics."""
    if scaler.target not in scaler.columns:
        mean, std = column_stats(values)
        return Scaler(
            scaler.columns, mean, std, scaler.target, scaler.target_mean, scaler.target_std
        )
    at = scaler.columns.index(scaler.target)
    rows = training_rows(values, values[:, at], len(values), at=at, difference=scaler.difference)
    return fit_scaler(scaler.columns, scaler.target, *rows, difference=scaler.difference)


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
        model: Model,
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

    def _spec(self, path: Path | None) -> DataSpec:
        """The study's ``[data]`` for new data: its id, time, missing rule, window; the
        source from the file's suffix."""
        data = self.data
        source = str(data.get("source", "csv"))
        if path is not None:
            by_suffix = {".parquet": "parquet", ".npz": "npz", ".ts": "ts"}
            source = by_suffix.get(path.suffix.lower(), "csv")
        elif source in ("synthetic", "npz", "ts"):
            source = "csv"
        keys = ("target", "id", "time", "missing", "max_length", "normalize", "window", "horizon")
        known = {k: data[k] for k in keys if data.get(k) is not None}
        if isinstance(known.get("target"), list):  # a regression of several columns
            known["target"] = known["target"][0]
        return DataSpec(source=source, path=str(path or "<frame>"), **known)

    def predict(self, data: pd.DataFrame | str | Path) -> pd.DataFrame:
        """Predictions for new data in the study's format: a frame (the table's columns) or
        the path of a CSV, Parquet or NPZ file. One row per window (forecast) or per id
        (classify, regress; per sequence of an NPZ)."""
        frame = data if isinstance(data, pd.DataFrame) else None
        spec = self._spec(None if frame is not None else Path(data))
        seqs = read(spec, self.kind, data=frame, inputs=self.columns)
        if spec.source in ("npz", "ts") and len(seqs.columns) != len(self.columns):
            raise InputError(
                f"{spec.path}: X has {len(seqs.columns)} features per step, but the model was "
                f"trained on {len(self.columns)}"
            )
        if self.kind == "forecast" and spec.source not in ("npz", "ts"):
            return self._forecast(seqs, spec)
        return self._per_sequence(seqs, spec)

    def _scaler_of(self, seqs: Sequences, i: int) -> Scaler:
        if seqs.id_name is None:
            return self.scaler
        own = self.scaler.for_series(seqs.keys[i])
        if own is not None:
            return own
        if not self.scaler.series:
            return self.scaler
        _log.info("id %r was not in the study: scaled on its own rows", seqs.keys[i])
        return _own_scaler(self.scaler, seqs.rows(i))

    def _forecast(self, seqs: Sequences, spec: DataSpec) -> pd.DataFrame:
        parts = []
        for i, key in enumerate(seqs.keys):
            scaler = self._scaler_of(seqs, i)
            where = f"{spec.path}: id {key!r} has " if seqs.id_name else f"{spec.path}: "
            values = forecasts(self.model, scaler, seqs.rows(i), spec.window, where)
            part = pd.DataFrame(
                values, columns=[f"{scaler.target}+{j + 1}" for j in range(values.shape[1])]
            )
            skip = spec.window - 1 + int(scaler.difference)
            part.insert(0, seqs.time_name or "row", seqs.times_of(i)[skip:])
            if seqs.id_name is not None:
                part.insert(0, seqs.id_name, key)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def _per_sequence(self, seqs: Sequences, spec: DataSpec) -> pd.DataFrame:
        out = _outputs(self.model, *pad(sequence_steps(seqs, spec), self.scaler))
        if spec.source in ("npz", "ts"):
            keys: list[Any] = list(seqs.keys) if seqs.id_name else list(range(len(seqs)))
            frame = pd.DataFrame({"sequence": keys})
        else:
            frame = pd.DataFrame({spec.id or "id": list(seqs.keys)})
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


class Forecaster:
    """A saved model with its scaler and window: forecasts of one series in the target's
    own units, from a frame holding the study's columns (``load_model`` alone gives the
    network, whose outputs are on the scale the study trained on)."""

    def __init__(self, model: Model, scaler: Scaler, window: int, horizon: int) -> None:
        self.model = model
        self.scaler = scaler
        self.window = window
        self.horizon = horizon

    @classmethod
    def load(cls, directory: str | Path) -> Forecaster:
        """From a folder written by ``depthsearch export --retrain``."""
        folder = Path(directory)
        doc = read_retrained(folder)
        data = doc["data"]
        scaler = Scaler.from_dict(doc["scaler"])
        return cls(load_model(folder), scaler, int(data["window"]), int(data["horizon"]))

    @property
    def columns(self) -> list[str]:
        """The columns a frame must hold (the model's inputs)."""
        return list(self.scaler.columns)

    def _values(self, frame: pd.DataFrame) -> NDArray[np.float64]:
        """The frame's input columns, read as the study's data is (missing values refused)."""
        spec = DataSpec(source="csv", path="<frame>", window=self.window, horizon=self.horizon)
        return read(spec, "forecast", data=frame, inputs=self.columns).values

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The forecast for the ``horizon`` steps after the frame's last row: one row per
        step (``step`` 1, 2, ...), the target's column in its own units."""
        rows = self._values(frame)[-(self.window + int(self.scaler.difference)) :]
        last = forecasts(self.model, self.scaler, rows, self.window)[-1]
        return pd.DataFrame(
            {"step": np.arange(1, self.horizon + 1), self.scaler.target: last}
        ).set_index("step")

    def predict_windows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per window of the frame, indexed by the frame's index at the window's last
        row: ``{target}+1`` ... ``{target}+horizon`` in the target's own units."""
        values = forecasts(self.model, self.scaler, self._values(frame), self.window)
        return pd.DataFrame(
            values,
            columns=[f"{self.scaler.target}+{i + 1}" for i in range(values.shape[1])],
            index=frame.index[self.window - 1 + int(self.scaler.difference) :],
        )


def predict_csv(directory: str | Path, csv: str | Path, *, runtime: str = "torch") -> pd.DataFrame:
    """Predictions of a saved model for a file in the study's format (CSV, Parquet or NPZ):
    see :meth:`Predictor.predict`.

    A forecast of one series gives one row per window: the file's time column at the
    window's last input row (its first column that is not an input, e.g. ``month``; else
    ``row``, the 0-based row number) and ``{target}+1`` ... ``{target}+horizon`` in the
    target's own units.
    """
    return Predictor.load(directory, runtime=runtime).predict(csv)
