"""The worker runtime, one process: a trial's life (:mod:`.trial`), its writes
(:mod:`.writer`), heartbeats, signals, checkpoints. It starts no process: starting
workers is :mod:`depthsearch.launch`'s.

Imported module by module (``depthsearch.worker.trial`` trains, and imports torch), so this
package file imports nothing.
"""
