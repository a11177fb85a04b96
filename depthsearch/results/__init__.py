"""Reading a study back: the picked trial exported (and retrained), the trials table, the
report, and optuna-dashboard over the database."""
