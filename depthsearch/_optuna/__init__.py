"""Optuna compatibility: the one home of what depthsearch uses of Optuna beyond its public API.

- :mod:`._names`: private names on Optuna's objects (a study's storage and id, a trial's id, the
  trial cache's first read, an ``optuna.Trial`` for an existing trial id) and the warnings we
  silence;
- :mod:`.tables`: every statement on Optuna's tables (counts, the reservation's take and insert,
  the fast read of a study's trials, heartbeats' ages, attributes, the best value).

A bottom layer: only :mod:`depthsearch.storage` and :mod:`depthsearch.search` import it
(import-linter), and ``tests/test_layers.py`` checks that no other module names Optuna's private
names, its table models or its tables. An Optuna upgrade that changes any of it breaks this
package alone.
"""

from depthsearch._optuna._names import (
    asked_trial,
    cached,
    frozen_trial,
    ignore_optuna_warnings,
    needs_first_read,
    prime_cache,
    quiet_experimental,
    rdb_backend,
    schema_versions,
    seed_sampler,
    study_id,
    study_ids,
    study_storage,
    trial_for_id,
    trial_id,
)

__all__ = [
    "asked_trial",
    "cached",
    "frozen_trial",
    "ignore_optuna_warnings",
    "needs_first_read",
    "prime_cache",
    "quiet_experimental",
    "rdb_backend",
    "schema_versions",
    "seed_sampler",
    "study_id",
    "study_ids",
    "study_storage",
    "trial_for_id",
    "trial_id",
]
