"""``python -m depthsearch`` is the ``depthsearch`` command (the launcher spawns workers so)."""

from depthsearch.cli import main

main(prog_name="depthsearch")
