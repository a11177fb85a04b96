"""Create, load or resume a study from a spec, or join one knowing only its name."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from depthsearch._text import counted
from depthsearch.errors import InputError, MissingDataFile, StorageError, StudyMismatchError
from depthsearch.search.pruners import make_pruner
from depthsearch.search.samplers import make_sampler
from depthsearch.search.trials import SPEC, SUMMARY
from depthsearch.spec import (
    DATA_KEYS,
    StudySpec,
    applicable,
    read_study_file,
    spec_from_dict,
)
from depthsearch.storage import (
    add_indexes,
    experimental,
    load_all_trials,
    mask_url,
    new_complete_trials,
    open_storage,
    storage_lock,
    trial_counts,
)

__all__ = [
    "InlineData",
    "create_study",
    "load_study",
    "no_such_study",
    "open_study",
    "read_spec",
    "spec_summary",
    "spec_with_data",
]

_log = logging.getLogger(__name__)


def spec_summary(spec: StudySpec) -> str:
    """One readable line for the dashboard: space, data, training, sampler and pruner."""
    s, d, t = spec.space, spec.data, spec.train
    data = "synthetic series" if d.source == "synthetic" else f"{d.path} [{d.target}]"
    width = "per layer " if s.per_layer_hidden else ""
    goal = (
        f"minimise {' and '.join(spec.objectives)} (Pareto front)"
        if spec.multi_objective
        else "minimise val_loss"
    )
    return (
        f"{goal} | stacked LSTM: layers {s.num_layers.describe()}, {width}hidden "
        f"{s.hidden_size.describe()}, dropout {s.dropout.describe()}, lr "
        f"{s.lr.describe()}, batch {s.batch_size.describe()} | data: {data}, "
        f"window {d.window} -> horizon {d.horizon}, val {d.val_fraction:g} | "
        f"{t.max_epochs} epochs on {t.device} | {spec.sampler.kind} sampler, "
        f"{spec.pruner.kind} pruner | budget {counted(spec.n_trials, 'trial')}"
    )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix]


#: The spec's tables that change no trial: a study resumes with others (the stored spec follows).
_NO_TRIAL_TABLES = ("confirm", "tracking")


def _normalise(doc: Any) -> Any:
    """A spec document as stored: tuples become lists (a JSON round trip), a ``[data]``
    table holds only the keys that apply to its source and task (an older release stored
    some others at their defaults), and ``[space] readout`` is said (older studies read the
    last step)."""
    out = json.loads(json.dumps(doc))
    if isinstance(out, dict) and isinstance(out.get("data"), dict):
        kind = out.get("task", {}).get("kind", "forecast")
        out["data"] = applicable(out["data"], kind)
    if isinstance(out, dict) and isinstance(out.get("space"), dict):
        out["space"].setdefault("readout", "last")  # what studies stored before it read
    return out


def create_study(
    spec: StudySpec, storage_url: str, *, sampler_seed: int | None = None
) -> optuna.Study:
    """Creates the study named in ``spec``, or resumes it when its stored spec is the same.

    Only ``[study] n_trials`` (the budget) may differ on resume; the stored spec then takes
    the new budget.

    Raises:
        StudyMismatchError: a study of that name was created from a different spec.
        StorageError: the database cannot be reached or used.
    """
    storage = open_storage(storage_url, spec.workers)
    sampler = make_sampler(spec, spec.seed if sampler_seed is None else sampler_seed)
    with storage_lock(storage_url):
        add_indexes(storage)  # what keeps the reservation's count small at any size
        try:
            study_id = storage.get_study_id_from_name(spec.name)
        except KeyError:
            study_id = None
        if study_id is None:
            return _new_study(spec, storage, storage_url, sampler)
        stored = storage.get_study_user_attrs(study_id).get(SPEC)
        if stored is None:
            raise StudyMismatchError(
                f"study {spec.name!r} in {mask_url(storage_url)} was not created by depthsearch "
                "(it has no stored spec); choose another [study] name"
            )
        stored, new = _normalise(stored), _normalise(spec.to_dict())
        _check_same(spec, storage_url, stored, new)
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=sampler,
            pruner=make_pruner(spec, new_complete_trials),
        )
        _resumed(study, spec, storage_url, stored, new)
        return study


def _new_study(
    spec: StudySpec, storage: Any, storage_url: str, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    # Optuna announces it at INFO ("A new study created ..."); our own line says more.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            directions=spec.directions,
            sampler=sampler,
            pruner=make_pruner(spec, new_complete_trials),
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    with experimental():
        # The dashboard labels the axes (and the Pareto front) with these names.
        study.set_metric_names(list(spec.objectives))
    study.set_user_attr(SPEC, _normalise(spec.to_dict()))
    study.set_user_attr(SUMMARY, spec_summary(spec))
    _log.info("created study %r in %s", spec.name, mask_url(storage_url))
    return study


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored or new spec without what may change on resume (budget, data path, tables
    that change no trial)."""
    out = dict(spec, study={k: v for k, v in spec.get("study", {}).items() if k != "n_trials"})
    out["data"] = {k: v for k, v in spec.get("data", {}).items() if k != "path"}
    for table in _NO_TRIAL_TABLES:
        out.pop(table, None)
    return out


def _check_same(
    spec: StudySpec, storage_url: str, stored: dict[str, Any], new: dict[str, Any]
) -> None:
    """Raises StudyMismatchError when ``spec`` (``new``, normalised) would train other trials
    than the ``stored`` spec (normalised)."""
    ours, theirs = _comparable(new), _comparable(stored)
    theirs["study"].setdefault("objectives", ["val_loss"])  # specs stored before objectives
    # Specs stored before the test part held none; [confirm] changes no trial.
    theirs["data"].setdefault("test_fraction", 0.0)
    for key in ("season", "difference"):
        if key in ours["data"]:
            theirs["data"].setdefault(key, ours["data"][key])
    differing = _diff(theirs, ours)
    where = mask_url(storage_url)
    if differing == ["data.test_fraction"] and "test_fraction" not in stored.get("data", {}):
        raise StudyMismatchError(
            f"study {spec.name!r} in {where} was created before [data] "
            f"test_fraction (it holds no test part); add `test_fraction = 0` to [data] to "
            "resume it, or give the study a new [study] name to search with a test part"
        )
    if differing:
        raise StudyMismatchError(
            f"study {spec.name!r} in {where} was created from a different "
            f"spec (differs at: {', '.join(differing)}); give the changed spec a new [study] "
            "name, or delete the old study with `optuna delete-study --study-name "
            f"{shlex.quote(spec.name)} --storage {shlex.quote(where)}`"
        )


def _resumed(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    stored: dict[str, Any],
    new: dict[str, Any],
) -> None:
    """Stores the new budget and trial-neutral tables (``stored`` and ``new`` normalised);
    warns when the budget is already met."""
    before = stored.get("study", {}).get("n_trials")
    if before != spec.n_trials or any(stored.get(t) != new.get(t) for t in _NO_TRIAL_TABLES):
        study.set_user_attr(
            SPEC,
            dict(stored, study=new["study"], **{t: new[t] for t in _NO_TRIAL_TABLES}),
        )
        study.set_user_attr(SUMMARY, spec_summary(spec))
    _log.info("resuming study %r in %s", spec.name, mask_url(storage_url))
    counted = trial_counts(study)
    finished = counted[TrialState.COMPLETE] + counted[TrialState.PRUNED]
    if isinstance(before, int) and spec.n_trials < before and finished >= spec.n_trials:
        _log.warning(
            "[study] n_trials went from %d to %d, but study %r already holds %d finished "
            "trials: no new trial will run (raise n_trials above %d to search on)",
            before,
            spec.n_trials,
            spec.name,
            finished,
            finished,
        )


def no_such_study(
    storage: optuna.storages.BaseStorage, name: str, storage_url: str, *, hint: bool = False
) -> StorageError:
    """The error for a study name that is not in the database, listing those that are;
    ``hint``: how to create it (for ``worker``)."""
    names = [s.study_name for s in storage.get_all_studies()]
    how = "; create it with `depthsearch create STUDY.toml`" if hint else ""
    return StorageError(
        f"no study named {name!r} in {mask_url(storage_url)}; studies there: "
        f"{names if names else 'none'}{how}"
    )


def read_spec(name: str, storage_url: str, *, data_path: str | None = None) -> StudySpec:
    """The spec stored in study ``name``, validated again (the data file must be here)."""
    storage = open_storage(storage_url, existing=True)
    try:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            raise no_such_study(storage, name, storage_url, hint=True) from None
        stored = storage.get_study_user_attrs(study_id).get(SPEC)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    if not isinstance(stored, Mapping):
        raise StudyMismatchError(
            f"study {name!r} in {mask_url(storage_url)} was not created by depthsearch "
            "(it has no stored spec)"
        )
    doc = _normalise(stored)
    if isinstance(doc.get("data"), dict):
        doc["data"].setdefault("test_fraction", 0.0)  # stored before the test part: none
    if data_path is not None and doc.get("data", {}).get("source") == "csv":
        doc["data"]["path"] = data_path
    where = f"the spec stored in study {name!r}"
    try:
        return spec_from_dict(doc, where=where)
    except MissingDataFile as e:
        raise MissingDataFile(f"{e}; pass --data PATH to point at this machine's copy") from e


def load_study(
    name: str, storage_url: str, *, sampler_seed: int | None = None, data_path: str | None = None
) -> tuple[optuna.Study, StudySpec]:
    """Joins an existing study knowing only its name: its spec comes from the database."""
    spec = read_spec(name, storage_url, data_path=data_path)
    storage = open_storage(storage_url, spec.workers, existing=True)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(spec, sampler_seed),
        pruner=make_pruner(spec, new_complete_trials),
    )
    return study, spec


def open_study(study_name: str, storage_url: str, *, read_trials: bool = True) -> optuna.Study:
    """The study to read results from (no sampler or pruner of ours needed); its trials read
    at once, fast (``read_trials=False``: for a caller that asks the database itself)."""
    storage = open_storage(storage_url, existing=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise no_such_study(storage, study_name, storage_url) from None
    if read_trials:
        load_all_trials(study)  # every command here reads them all: in seconds at 100,000
    return study


#: What ``run_study(..., data=...)`` takes: a long-format frame, or arrays ``X``, ``y`` and
#: optionally ``lengths`` (a mapping with those keys, or a tuple in that order).
InlineData = Any


def _write_data(data: InlineData, folder: Path, name: str) -> tuple[str, Path]:
    """Writes the caller's data once as ``NAME.data.parquet`` / ``.npz`` in ``folder``."""
    import numpy as np
    import pandas as pd

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    if isinstance(data, pd.DataFrame):
        path = folder / f"{safe}.data.parquet"
        try:
            data.to_parquet(path, index=False)
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"cannot write the data to {path}: {e}") from e
        return "parquet", path
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items()}
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        arrays = dict(zip(("X", "y", "lengths"), map(np.asarray, data), strict=False))
    else:
        raise InputError(
            "data must be a pandas DataFrame (long format) or arrays X, y[, lengths] (a dict "
            f"or a tuple), but got {type(data).__name__}"
        )
    path = folder / f"{safe}.data.npz"
    try:
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy types its one keyword
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot write the data to {path}: {e}") from e
    return "npz", path


def spec_with_data(
    study: str | Path | Mapping[str, Any] | StudySpec, data: InlineData, url: str
) -> StudySpec:
    """The study with ``data`` written once beside it (the study file's folder, else the
    SQLite database's, else the working directory) as its ``[data]`` source: workers on other
    machines read the same bytes, checked by the SHA-256 the spec records."""
    if isinstance(study, StudySpec):
        doc: dict[str, Any] = study.to_dict(secrets=True)
        folder, where = Path.cwd(), study.source
    elif isinstance(study, (str, Path)):
        path = Path(study)
        doc = read_study_file(path)
        folder, where = path.resolve().parent, str(path)
    else:
        doc = {k: dict(v) if isinstance(v, Mapping) else v for k, v in study.items()}
        folder, where = Path.cwd(), "<dict>"
    if not isinstance(study, (str, Path)) and url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).resolve().parent
    name = str(doc.get("study", {}).get("name", "study"))
    source, path = _write_data(data, folder, name)
    table = dict(doc.get("data", {}))
    table.pop("sha256", None)  # the new file's is recorded
    kind = str(doc.get("task", {}).get("kind", "forecast"))
    before = str(table.get("source", "synthetic"))
    # What applied to the table's own source but not to the data's (a synthetic length, a
    # csv's id for arrays) goes; a key that applied to neither stays, to be refused.
    doc["data"] = {
        k: v
        for k, v in {**table, "source": source, "path": str(path)}.items()
        if k not in DATA_KEYS
        or DATA_KEYS[k].applies(source, kind)
        or not DATA_KEYS[k].applies(before, kind)
    }
    return spec_from_dict(doc, where=where, base=folder)
