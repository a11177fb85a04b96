"""The search, on Optuna: the space (the only caller of ``suggest_*``), the objective (a
candidate sampled, built and trained), the sampler and pruners, confirmations, and what a
trial records.

No processes, no URLs, no database writes: the worker runs a trial around the objective and
hands it the callback that reports each epoch; the search never imports the worker (checked
by import-linter). Optuna's private names are used in :mod:`depthsearch._optuna` alone, which
only the search and the storage import.
"""
