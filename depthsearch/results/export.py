"""The picked trial -> a config document that rebuilds the very same model elsewhere, and a
model retrained from it (saved in :mod:`depthsearch.learn.saved`'s format)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from depthsearch.errors import InputError
from depthsearch.learn.config import FORMAT, ModelConfig, write_document
from depthsearch.results.answer import Answer, answer_of
from depthsearch.results.verdict import NOTHING_LEARNED
from depthsearch.search import trials as keys
from depthsearch.search.confirm import search_trials
from depthsearch.search.trials import best_trial, metric_names
from depthsearch.spec import StudySpec
from depthsearch.storage import mask_url
from depthsearch.studies import open_study, read_spec
from depthsearch.tracking import ENV_VAR as TRACKING_ENV
from depthsearch.tracking import PARENT_ATTR, target_of

__all__ = [
    "best_config",
    "export_best",
    "open_study",
    "parse_pick",
    "pick_trial",
    "retrain_best",
]


#: ``--pick``'s default: the smallest candidate within the noise of the best.
NOISE = "noise"
DEFAULT_PICK = "smallest-within=noise"


def pick_trial(
    study: optuna.Study,
    storage_url: str,
    pick: str = DEFAULT_PICK,
    *,
    found: Answer | None = None,
) -> optuna.trial.FrozenTrial:
    """The trial that ``pick`` names among the complete ones.

    ``best``: the lowest validation loss. ``smallest-within=P%``: the fewest parameters among
    the trials whose loss is within P percent of the best (ties: the lower loss).
    ``smallest-within=noise`` (:data:`DEFAULT_PICK`): the same within the best's noise, two
    standard errors of its validation loss: among candidates the validation part cannot tell
    apart, the smallest, which overfits least. On a
    multi-objective study both choose from the Pareto front (``study.best_trials``).
    ``confirmed`` and ``confirmed:smallest-within=P%``: the same among the confirmed
    candidates, by their confirmed means (``found``: the study's answer, when the caller has
    it already).
    """
    confirmed, tolerance = parse_pick(pick)
    maximise = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    if confirmed:
        return _confirmed_pick(found or answer_of(study), study, _fraction(tolerance))
    pool = (
        study.best_trials
        if len(study.directions) > 1
        else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    )
    # The search's own trials: a confirmation is a candidate's re-run, not a new candidate.
    complete = [t for t in search_trials(pool) if keys.MODEL_CONFIG in t.user_attrs]
    best = best_trial(complete, maximise=maximise)
    if best is None:
        raise InputError(
            f"study {study.study_name!r} in {mask_url(storage_url)} has no complete trial yet; "
            "run more trials first"
        )
    if tolerance is None:
        return best
    if tolerance == NOISE:
        se = best.user_attrs.get(keys.VAL_LOSS_SE)
        noise = 2.0 * float(se) if isinstance(se, (int, float)) and not maximise else 0.0
        tolerance = noise / abs(best.values[0]) if best.values[0] else 0.0
    return _smallest_within(
        [t for t in complete if t.values],
        value=lambda t: t.values[0],
        size=lambda t: t.user_attrs.get(keys.PARAM_COUNT, 0),
        order=lambda t: t.number,
        best=best.values[0],
        tolerance=float(tolerance),
        maximise=maximise,
    )


T = TypeVar("T")


def _smallest_within(
    items: list[T],
    *,
    value: Callable[[T], float],
    size: Callable[[T], Any],
    order: Callable[[T], Any],
    best: float,
    tolerance: float,
    maximise: bool,
) -> T:
    """The smallest item (``size``) whose ``value`` is within ``tolerance`` (a fraction) of
    ``best``; ties: the better value, then ``order``."""
    sign = -1.0 if maximise else 1.0
    limit = best + sign * abs(best) * tolerance
    near = [i for i in items if sign * value(i) <= sign * limit]
    return min(near, key=lambda i: (size(i), sign * value(i), order(i)))


#: ``--pick confirmed``: the answer's recommendation; ``confirmed:smallest-within=P%``: the
#: fewest parameters among the confirmed candidates whose mean is within P% of the best's.
CONFIRMED = "confirmed"


def _confirmed_pick(
    found: Answer, study: optuna.Study, tolerance: float | None
) -> optuna.trial.FrozenTrial:
    if found.best is None or found.recommended is None:
        raise InputError(
            f"study {study.study_name!r} has no confirmed candidate: run `depthsearch confirm "
            f"--study {study.study_name} --per-depth --seeds 5` first"
        )
    if not found.learned:
        assert found.verdict is not None
        raise InputError(
            f"study {study.study_name!r}: {NOTHING_LEARNED} {found.verdict.baseline!r} over "
            "its seeds; the answer is the baseline (`--pick best` exports the search's best "
            "anyway)"
        )
    if tolerance is None:
        return found.recommended.candidate.source
    chosen = _smallest_within(
        found.rows,
        value=lambda r: r.val.mean,
        size=lambda r: r.candidate.param_count or 0,
        order=lambda r: r.candidate.depth or 0,
        best=found.best.val.mean,
        tolerance=tolerance,
        maximise=found.maximise,
    )
    return chosen.candidate.source


def confirmed_metrics(found: Answer, number: int) -> dict[str, Any] | None:
    """A confirmed candidate's means over its seeds (validation and test) with their 95 %
    intervals' half-widths; None when trial ``number`` was not confirmed."""
    for r in found.rows:
        if r.candidate.source.number == number:
            out: dict[str, Any] = {
                "seeds": r.val.n,
                found.metric: {"mean": r.val.mean, "half_width_95": r.val.half},
            }
            if r.test is not None:
                out[found.test_metric] = {"mean": r.test.mean, "half_width_95": r.test.half}
            return out
    return None


def _fraction(tolerance: float | str | None) -> float | None:
    return None if tolerance is None or isinstance(tolerance, str) else tolerance


def parse_pick(pick: str) -> tuple[bool, float | str | None]:
    """``--pick`` -> (among the confirmed candidates?, the smallest-within fraction, "noise",
    or None): ``best``, ``smallest-within=2%`` (0.02), ``smallest-within=noise``,
    ``confirmed``, ``confirmed:smallest-within=2%``; anything else is refused, before
    anything is read."""
    if pick in ("best", CONFIRMED):
        return pick == CONFIRMED, None
    if pick == DEFAULT_PICK:
        return False, NOISE
    confirmed = pick.startswith(CONFIRMED + ":")
    rest = pick[len(CONFIRMED) + 1 :] if confirmed else pick
    prefix = "smallest-within="
    if rest.startswith(prefix) and rest.endswith("%"):
        try:
            value = float(rest[len(prefix) : -1])
        except ValueError:
            value = -1.0
        if value >= 0:
            return confirmed, value / 100.0
    raise InputError(
        "--pick must be 'best', 'smallest-within=noise', 'smallest-within=P%' (P >= 0, e.g. "
        f"2%), 'confirmed' or 'confirmed:smallest-within=P%', but got {pick!r}"
    )


def best_config(study_name: str, storage_url: str, *, pick: str = DEFAULT_PICK) -> dict[str, Any]:
    """The export document of the picked complete trial (see :func:`pick_trial`)."""
    study = open_study(study_name, storage_url)
    found = answer_of(study)  # read once: the confirmed pick and the confirmed means
    trial = pick_trial(study, storage_url, pick, found=found)
    spec = study.user_attrs.get(keys.SPEC, {})
    attrs = trial.user_attrs
    train = dict(spec.get("train", {}))
    train.update(
        lr=trial.params.get("lr", spec.get("space", {}).get("lr")),
        batch_size=trial.params.get("batch_size", spec.get("space", {}).get("batch_size")),
        best_epoch=attrs.get(keys.BEST_EPOCH),
        seed=attrs.get(keys.SEED),
    )
    return {
        "format": FORMAT,
        "model": attrs[keys.MODEL_CONFIG],
        "train": train,
        "data": spec.get("data", {}),
        "task": {
            "kind": spec.get("task", {}).get("kind", "forecast"),
            **({"classes": attrs[keys.CLASSES]} if keys.CLASSES in attrs else {}),
        },
        "metrics": {
            "val_loss": trial.values[0],
            "objectives": dict(zip(metric_names(study), trial.values, strict=True)),
            "param_count": attrs.get(keys.PARAM_COUNT),
            "epochs_trained": attrs.get(keys.EPOCHS_TRAINED),
            "best_epoch": attrs.get(keys.BEST_EPOCH),
            "seconds_per_epoch": attrs.get(keys.SECONDS_PER_EPOCH),
            **{m: attrs[m] for m in keys.TASK_METRICS if m in attrs},
        },
        **(
            {"confirmed": confirmed}
            if (confirmed := confirmed_metrics(found, trial.number)) is not None
            else {}
        ),
        "origin": {
            "study": study.study_name,
            "trial": trial.number,
            "params": trial.params,
            "torch_threads": attrs.get(keys.TORCH_THREADS),
            "storage": mask_url(storage_url),
            "pick": pick,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_best(
    study_name: str, storage_url: str, output: str | Path, *, pick: str = DEFAULT_PICK
) -> dict[str, Any]:
    """Writes the picked trial's export document to ``output`` (JSON) and returns it."""
    doc = best_config(study_name, storage_url, pick=pick)
    write_document(Path(output), doc)
    return doc


#: What ``export --retrain`` trains on: the study's training part (the trial's own model),
#: or its training and validation parts (``--refit all``).
REFITS = ("train", "all")


def retrain_best(
    study_name: str,
    storage_url: str,
    output_dir: str | Path,
    *,
    pick: str = DEFAULT_PICK,
    data_path: str | None = None,
    formats: tuple[str, ...] = (),
    register: str | None = None,
    refit: str = "train",
) -> dict[str, Any]:
    """Trains the picked trial's config again and saves ``model.pt`` and ``config.json``;
    ``formats``: also ``torchscript`` (``model.ts``) and/or ``onnx`` (``model.onnx``), each
    checked against the model (see :mod:`depthsearch.results.portable`). ``register``: also
    log the model to the study's MLflow server and register it under that name
    (:func:`depthsearch.results.registry.register_model`; the result under ``registered``).

    The model trains on the study's own data and split (its training windows), with the
    trial's seed, learning rate and batch size, for the trial's ``best_epoch`` epochs: on the
    CPU this reproduces the trial's model at its best epoch. ``refit = "all"`` trains on the
    training and validation parts together, for as many epochs (the validation part then
    judges nothing: only the test part, where there is one, is scored).

    Returns:
        The saved config document, with ``retrain`` holding what the retrained model scored.
    """
    if refit not in REFITS:
        raise InputError(f"--refit {refit!r}: must be one of {list(REFITS)}")
    doc = best_config(study_name, storage_url, pick=pick)
    spec = read_spec(study_name, storage_url, data_path=data_path)
    target = target_of(spec, storage=mask_url(storage_url))
    if register is not None and target is None:
        raise InputError(
            f"--register needs an MLflow server: set [tracking] mlflow in the study file or "
            f"{TRACKING_ENV}"
        )
    from depthsearch.learn.saved import save_model

    model, data = _retrained(doc, spec, refit)
    doc["scaler"] = data.scaler.to_dict()
    if data.classes:
        doc["task"]["classes"] = list(data.classes)
    if formats:
        _write_formats(model, doc, spec, data, Path(output_dir), formats)
    save_model(model, doc, output_dir)
    if register is not None:
        assert target is not None
        _register(model, doc, target, register, data, study_name, storage_url, Path(output_dir))
    return doc


def _retrained(doc: dict[str, Any], spec: StudySpec, refit: str) -> tuple[Any, Any]:
    """The picked config trained again as the trial was (see :func:`retrain_best`), and the
    data; ``doc["retrain"]`` says what it scored."""
    import torch

    from depthsearch.learn.data import prepare
    from depthsearch.learn.evaluate import assess_test, assess_val
    from depthsearch.learn.model import build_model
    from depthsearch.learn.train import fit, resolve_device, seed_torch
    from depthsearch.search.objective import fit_options

    device = resolve_device(spec.train.device)
    data = prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    train = doc["train"]
    seed = int(train["seed"])
    seed_torch(seed, device)
    model = build_model(ModelConfig.from_dict(doc["model"])).to(device)
    epochs = int(train.get("best_epoch") or spec.train.max_epochs)
    options = fit_options(
        spec.train,
        lr=float(train["lr"]),
        batch_size=int(train["batch_size"]),
        seed=seed,
        epochs=epochs,
    )
    trained_on = data.with_validation_trained() if refit == "all" else data
    on_device = trained_on.to(device)
    # The trial's own thread count: a CPU's sums in another order differ in the last bits,
    # which 20 epochs make visible; with the same count the retrain is the trial's model.
    threads = doc.get("origin", {}).get("torch_threads")
    before = torch.get_num_threads()
    if isinstance(threads, int) and threads > 0 and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        fit(model, on_device, options)
    finally:
        torch.set_num_threads(before)
    scored: dict[str, Any] = {}
    if refit == "train":
        judged = assess_val(model, on_device, amp=spec.train.amp)
        scored = {"val_loss": judged.loss, **judged.metrics}
    if data.has_test:  # scored once the choice is made (it never took part in it)
        scored.update(assess_test(model, on_device, amp=spec.train.amp).metrics)
    doc["retrain"] = {
        "epochs": epochs,
        "device": str(device),
        "refit": refit,
        **scored,
        "data": spec.data.path or "synthetic series",
        "train_windows": int(trained_on.x_train.shape[0]),
    }
    return model, data


def _write_formats(
    model: Any, doc: dict[str, Any], spec: StudySpec, data: Any, folder: Path, formats: Any
) -> None:
    from depthsearch.results.portable import (
        ONNX_FILE,
        TORCHSCRIPT_FILE,
        write_onnx,
        write_torchscript,
    )

    writers = {
        "torchscript": (write_torchscript, TORCHSCRIPT_FILE),
        "onnx": (write_onnx, ONNX_FILE),
    }
    folder.mkdir(parents=True, exist_ok=True)
    length = spec.data.window if spec.task.kind == "forecast" else int(data.x_train.shape[1])
    doc["exports"] = {}
    for name in formats:
        write, file = writers[name]
        worst = write(model, folder / file, input_size=model.config.input_size, length=length)
        doc["exports"][name] = {"file": file, "max_abs_diff": worst}


def _register(
    model: Any,
    doc: dict[str, Any],
    target: Any,
    name: str,
    data: Any,
    study_name: str,
    storage_url: str,
    folder: Path,
) -> None:
    from depthsearch.learn.config import CONFIG_FILE
    from depthsearch.results.registry import register_model

    study = open_study(study_name, storage_url, read_trials=False)
    parent = study.user_attrs.get(PARENT_ATTR)
    example = data.x_val[:4] if len(data.x_val) else data.x_train[:4]
    doc["registered"] = register_model(
        target, name, model, folder, doc, example.numpy(), parent=parent
    )
    write_document(folder / CONFIG_FILE, doc)
