"""The study database: URLs, engines, the cross-worker locks, retries, the reservation, reads.

SQLite (one machine) and PostgreSQL (many machines) go through Optuna's RDB storage. Each
worker holds a small pool (see :data:`POOL_SIZE`), so hundreds of workers stay under the
server's ``max_connections``. Every statement on Optuna's own tables is in
:mod:`depthsearch._optuna.tables`; this package opens the connections they run on.

- :mod:`.urls`: which URL, parsing, masking;  :mod:`.engine`: pools and connect arguments;
- :mod:`.connect`: :func:`open_storage`;  :mod:`.locks`: schema, study and reservation locks;
- :mod:`.retry`: :class:`Backoff` and the retry of a lost database;
- :mod:`.reservation`: the budget's count and the trial a worker takes, under one lock;
- :mod:`.reads`: counts, the fast first read, status's queries.
"""

from depthsearch._optuna import rdb_backend
from depthsearch.storage.connect import (
    RetryHeartbeatStaleTrialCallback,
    add_indexes,
    cached_storage,
    experimental,
    open_storage,
    quiet_optuna,
    study_ids_in,
)
from depthsearch.storage.engine import POOL_SIZE, dispose_lock_engines
from depthsearch.storage.locks import storage_lock
from depthsearch.storage.reads import (
    Running,
    best_complete,
    confirmation_trials,
    load_all_trials,
    new_complete_trials,
    prime_trials,
    recent_spans,
    retry_attrs,
    running_trials,
    running_without_heartbeat,
    trial_counts,
    trial_of,
    trial_user_attrs,
)
from depthsearch.storage.reservation import (
    BudgetCounts,
    LockedStudy,
    drop_retry,
    locked_study,
    take_waiting_trial,
)
from depthsearch.storage.retry import Backoff, retry_for, retrying
from depthsearch.storage.urls import (
    DEFAULT_STORAGE,
    ENV_VAR,
    check_url,
    dialect_of,
    mask_url,
    resolve_storage,
    sqlite_file,
)

__all__ = [
    "DEFAULT_STORAGE",
    "ENV_VAR",
    "POOL_SIZE",
    "Backoff",
    "BudgetCounts",
    "LockedStudy",
    "RetryHeartbeatStaleTrialCallback",
    "Running",
    "add_indexes",
    "best_complete",
    "cached_storage",
    "check_url",
    "confirmation_trials",
    "dialect_of",
    "dispose_lock_engines",
    "drop_retry",
    "experimental",
    "load_all_trials",
    "locked_study",
    "mask_url",
    "new_complete_trials",
    "open_storage",
    "prime_trials",
    "quiet_optuna",
    "rdb_backend",
    "recent_spans",
    "resolve_storage",
    "retry_attrs",
    "retry_for",
    "retrying",
    "running_trials",
    "running_without_heartbeat",
    "sqlite_file",
    "storage_lock",
    "study_ids_in",
    "take_waiting_trial",
    "trial_counts",
    "trial_of",
    "trial_user_attrs",
]
