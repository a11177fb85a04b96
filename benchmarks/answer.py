"""Is the search's own best depth the confirmed one, and how optimistic is its value?

For each search seed, runs a study file's search (default: the shipped sunspot study) on a
fresh SQLite file, then confirms the best candidate of every depth with --confirm-seeds new
seeds (``depthsearch confirm --per-depth`` run here), and compares:

- the search's best trial's depth with the depth of the best confirmed candidate (lowest mean
  validation loss over the seeds) and with the recommended one (the smallest depth whose 95 %
  interval overlaps the best's);
- the optimism gap of the search's best: (its confirmed mean - its search value) / its
  confirmed mean (positive: the search's value was optimistic).

    python benchmarks/answer.py [--study studies/quickstart.toml] [--seeds 4] [--confirm-seeds 5]

Last line: ``search_best_depth_is_confirmed_best=K/N recommended_is_search_depth=K/N
mean_optimism_gap=X%``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "quickstart.toml"))
    parser.add_argument("--seeds", type=int, default=4, help="search seeds: 1..N")
    parser.add_argument("--confirm-seeds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from depthsearch import run_study
    from depthsearch.results.answer import answer_of, model_label
    from depthsearch.search.trials import trial_layers
    from depthsearch.spec import load_spec
    from depthsearch.worker.confirm import enqueue_confirmations
    from depthsearch.worker.run import run_worker

    base = load_spec(args.study)
    print(
        f"# {base.name}: {base.n_trials} trials <= {base.train.max_epochs} epochs per search, "
        f"best of each depth confirmed over {args.confirm_seeds} seeds"
    )
    print(
        "| search seed | search's best | its value | confirmed mean (95% CI) | optimism gap "
        "| best confirmed | recommended | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    same_best = same_rec = 0
    gaps = []
    for seed in range(1, args.seeds + 1):
        started = time.perf_counter()
        spec = dataclasses.replace(base, name=f"answer-{seed}", seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'study.db'}"
            study = run_study(spec, storage=url)
            enqueue_confirmations(
                study, spec, url, top=1, seeds=args.confirm_seeds, per_depth=True
            )
            run_worker(study, spec, url, only_waiting=True)
            found = answer_of(study)
        searched = found.search_best
        assert searched is not None and found.best is not None and found.recommended is not None
        own = next(r for r in found.rows if r.candidate.source.number == searched.number)
        gap = (own.val.mean - searched.values[0]) / own.val.mean
        gaps.append(gap)
        depth = trial_layers(searched)
        same_best += depth == found.best.candidate.depth
        same_rec += depth == found.recommended.candidate.depth
        print(
            f"| {seed} | {model_label(searched)} (trial {searched.number}) "
            f"| {searched.values[0]:.4f} | {own.val.text()} | {gap:+.1%} "
            f"| {found.best.label} {found.best.val.text()} | {found.recommended.label} "
            f"| {(time.perf_counter() - started) / 60:.1f} |"
        )
    n = args.seeds
    print(
        f"search_best_depth_is_confirmed_best={same_best}/{n} "
        f"recommended_is_search_depth={same_rec}/{n} "
        f"mean_optimism_gap={statistics.fmean(gaps):+.1%}"
    )


if __name__ == "__main__":
    main()
