"""python experiments/fidelity/study.py [--out runs/fidelity] [--seeds 5] [--variant-seeds 3] [--cap 16000] [--record DIR]

The fidelity study of docs/fidelity.md: the presets paper, original and tl-demo on every seed,
the paper default with one anchor setting changed at a time, and a plain HookedTransformer
loop beside the original's and the demo's seed 0 (in this order of priority: the paper's
seeds, the original's seeds and the demo's first, the plain loops, one seed of each variant,
the demo's other seeds, the variants' other seeds), on a pool of single-thread
processes (one per usable core). Each run trains until test accuracy 0.99 and ``--margin``
epochs more (variants: until 0.99), capped at ``--cap``; interrupted, it goes on where it
stopped when run again. ``--summary`` only reads the run folders: it writes OUT/study.csv (one
row per run), OUT/study_by_setup.csv (mean, spread, min, max per setup) and OUT/study.md (the
tables of docs/fidelity.md); ``--record DIR`` also copies each run's small files and study.csv
to DIR (the repository keeps one in experiments/fidelity/record).
The logic lives in mechgrok.reproduce.fidelity.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mechgrok.reproduce import fidelity

COLUMNS = ("memorization_end", "circuit_formation_end", "cleanup_end", "test_acc_0.5", "test_acc_0.99", "test_loss_peak",
           "test_loss_peak_epoch", "final_train_loss", "final_test_loss", "neurons_explained_fraction",
           "worst_non_key_loss_change")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variant-seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(fidelity.VARIANTS))
    parser.add_argument("--cap", type=int, default=16_000)
    parser.add_argument("--margin", type=int, default=1000)
    parser.add_argument("--plain-epochs", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--summary", action="store_true", help="only summarise the run folders")
    parser.add_argument("--record", type=Path, default=None,
                        help="also copy each run's config, metrics and progress measures (no checkpoints) and "
                             "study.csv here, e.g. experiments/fidelity/record, checked by fidelity.check_record")
    args = parser.parse_args(argv)
    if not args.summary:
        setups = fidelity.setup_jobs(args.out, args.seeds, epochs=args.cap, margin=args.margin)
        by_name = {name: [j for j in setups if j.name == name] for name in fidelity.SETUPS}
        variants = fidelity.variant_jobs(args.out, args.variant_seeds, cap=args.cap, variants=args.variants)
        plain = [(by_name[name][0], args.plain_epochs) for name in ("original", "tl-demo")]
        # in order of priority: every paper seed; the original's seeds and the demo's first; the
        # plain loops; one seed of each variant (short); the demo's other seeds; then round by round
        # the variants' other seeds
        seeds_of = {name: [j for j in variants if j.name == name] for name in args.variants}
        rounds = [[js[r] for js in seeds_of.values() if len(js) > r] for r in range(args.variant_seeds)]
        jobs = (by_name["paper"] + by_name["original"] + by_name["tl-demo"][:1] + plain + rounds[0]
                + by_name["tl-demo"][1:] + [j for r in rounds[1:] for j in r])
        fidelity.train_study(jobs, args.workers, on_done=lambda record: print(json.dumps(record), flush=True))
    table = fidelity.summarise(args.out, on_row=lambda folder: print(f"summarising {folder}", flush=True))
    table.to_csv(args.out / "study.csv", index=False)
    fidelity.aggregate(table, COLUMNS).to_csv(args.out / "study_by_setup.csv", index=False)
    (args.out / "study.md").write_text(fidelity.study_markdown(table))
    print(f"wrote {args.out / 'study.csv'} ({len(table)} runs) and {args.out / 'study_by_setup.csv'}")
    if args.record is not None:
        path = fidelity.write_record(table, args.out, args.record)
        wrong = fidelity.check_record(args.record)
        print(f"wrote the record {path}: " + ("every number agrees with its files" if not wrong else "; ".join(wrong)))
        if wrong:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
