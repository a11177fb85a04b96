"""The search, on Optuna: the space (the only caller of ``suggest_*``), the objective, the
sampler and pruners, the reporting protocol the objective talks to, and what a trial records.

No processes, no URLs: whoever runs the objective (a worker, or ``study.optimize`` in a
notebook) hands it a reporter; the search never imports the worker (checked by import-linter).
Optuna's private names are used in :mod:`depthsearch._optuna` alone (the layers above reach
the few they need through :mod:`depthsearch.search.compat`). The modules are
imported where used: the worker's reporting process needs the pruners, never torch.
"""
