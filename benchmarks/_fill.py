"""Bulk-fill a PostgreSQL study with finished trials shaped like a depthsearch study's own.

The parameters come from the study's own space (``depthsearch.search.space.suggest`` on an
in-memory Optuna study with random sampling), the curves fall like real training curves, the
user attributes are the ones a worker writes; about 30% of the trials are COMPLETE (every
epoch), 65% PRUNED after a few epochs and 5% FAIL. Rows go in with ``COPY``: 100,000 trials
(about 3 million rows) take a minute instead of an hour of Optuna calls.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import optuna
import sqlalchemy

from depthsearch.learn.model import ModelConfig
from depthsearch.search.space import suggest
from depthsearch.spec import StudySpec

#: Distinct parameter sets drawn from the space; each filled trial takes one at random.
_PARAM_SETS = 400


def _param_sets(spec: StudySpec, rng: random.Random) -> list[tuple[dict[str, Any], ModelConfig]]:
    """(params with their distributions as JSON, the model) for trials drawn from the space."""
    sampler = optuna.samplers.RandomSampler(seed=rng.randrange(2**31))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(_PARAM_SETS):
        trial = study.ask()
        candidate = suggest(trial, spec.space, input_size=1, output_size=spec.data.horizon)
        frozen = study._storage.get_trial(trial._trial_id)
        params = {
            name: (
                frozen.distributions[name].to_internal_repr(value),
                optuna.distributions.distribution_to_json(frozen.distributions[name]),
            )
            for name, value in frozen.params.items()
        }
        study.tell(trial, 0.0)
        out.append((params, candidate.model))
    return out


def fill(url: str, study_name: str, spec: StudySpec, n: int, *, seed: int = 0) -> None:
    """Adds ``n`` finished trials to the (existing, empty) study ``study_name`` at ``url``."""
    rng = random.Random(seed)
    sets = _param_sets(spec, rng)
    epochs = spec.train.max_epochs
    engine = sqlalchemy.create_engine(url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT study_id FROM studies WHERE study_name = %s", (study_name,))
        (study_id,) = cur.fetchone()
        cur.execute("SELECT coalesce(max(trial_id), 0), count(*) FROM trials")
        first_id, _ = cur.fetchone()
        cur.execute("SELECT count(*) FROM trials WHERE study_id = %s", (study_id,))
        (first_number,) = cur.fetchone()
        start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=30)
        rows: dict[str, list[tuple[Any, ...]]] = {
            k: [] for k in ("trials", "params", "values", "steps", "attrs")
        }
        for k in range(n):
            tid = first_id + 1 + k
            params, model = sets[rng.randrange(len(sets))]
            u = rng.random()
            state = "COMPLETE" if u < 0.30 else "PRUNED" if u < 0.95 else "FAIL"
            trained = epochs if state == "COMPLETE" else rng.randint(1, max(1, epochs - 1))
            began = start + timedelta(seconds=2 * k)
            ended = began + timedelta(seconds=0.2 * trained)
            rows["trials"].append((tid, first_number + k, study_id, state, began, ended))
            for name, (value, dist) in params.items():
                rows["params"].append((tid, name, value, dist))
            floor, scale = rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.5)
            curve = [floor + scale / e + rng.gauss(0, 0.01) for e in range(1, trained + 1)]
            if state != "FAIL":
                rows["steps"] += [(tid, e, v, "FINITE") for e, v in enumerate(curve, 1)]
            if state == "COMPLETE":
                rows["values"].append((tid, 0, min(curve), "FINITE"))
            attrs: dict[str, Any] = {
                "model_config": {
                    "input_size": 1,
                    "hidden_sizes": list(model.hidden_sizes),
                    "output_size": model.output_size,
                    "dropout": model.dropout,
                    "bidirectional": model.bidirectional,
                    "residual": model.residual,
                    "layer_norm": model.layer_norm,
                    "batch_first": True,
                },
                "param_count": 100 + 40 * sum(model.hidden_sizes),
                "device": "cpu",
                "torch_threads": 1,
                "train_windows": 311,
                "seed": spec.seed + first_number + k,
                "worker_pid": 1000 + k % 64,
                "epochs_trained": trained,
                "seconds_per_epoch": rng.uniform(0.01, 0.05),
                "best_epoch": 1 + min(range(trained), key=curve.__getitem__),
            }
            if state == "FAIL":
                attrs["fail_reason"] = "its worker stopped before the first heartbeat"
            rows["attrs"] += [(tid, key, json.dumps(value)) for key, value in attrs.items()]
        copies = {
            "trials": "trials (trial_id, number, study_id, state, datetime_start, "
            "datetime_complete)",
            "params": "trial_params (trial_id, param_name, param_value, distribution_json)",
            "values": "trial_values (trial_id, objective, value, value_type)",
            "steps": "trial_intermediate_values (trial_id, step, intermediate_value, "
            "intermediate_value_type)",
            "attrs": "trial_user_attributes (trial_id, key, value_json)",
        }
        for kind, target in copies.items():
            with cur.copy(f"COPY {target} FROM STDIN") as copy:
                for row in rows[kind]:
                    copy.write_row(row)
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), "
            "(SELECT max(trial_id) FROM trials))"
        )
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
