"""The worker runtime: the trial loop, heartbeats, signals, the reporting process, ``launch``.

Imported module by module (``depthsearch.worker.loop`` trains, and imports torch;
``depthsearch.worker._reporting_child`` never does), so this package file imports nothing.
"""
