"""What the layers above the search (worker, results, studies, the CLI) use of Optuna beyond its
public API, from :mod:`depthsearch._optuna`, which only the search and the storage import."""

from depthsearch._optuna import (
    asked_trial,
    cached,
    frozen_trial,
    ignore_optuna_warnings,
    quiet_experimental,
    seed_sampler,
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
    "quiet_experimental",
    "seed_sampler",
    "study_ids",
    "study_storage",
    "trial_for_id",
    "trial_id",
]
