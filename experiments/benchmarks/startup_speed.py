"""Start-up time of the command line: ``import mechgrok``, ``mechgrok --help``, ``mechgrok train --help``.

    .venv/bin/python experiments/benchmarks/startup_speed.py            # 10 runs of each
    .venv/bin/python experiments/benchmarks/startup_speed.py --runs 20

Each command runs in a fresh subprocess (so nothing is cached in the interpreter; the OS file
cache is warmed by one untimed run first). Rounds interleave the commands, so a burst of load
from another job hits all of them alike. It prints the median and the minimum wall time of
each; the minimum is the best estimate of the cost itself on a shared machine, the median what
a user typically waits. The goal is ``mechgrok --help`` under 1 s: the parser is built without
importing torch, pandas or TransformerLens (tests/test_layout.py, tests/test_cli.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# `python -m mechgrok.cli` is what the `mechgrok` console script runs (pyproject [project.scripts]),
# without depending on where the script was installed.
COMMANDS = {
    'python -c "import mechgrok"': [sys.executable, "-c", "import mechgrok"],
    "mechgrok --help": [sys.executable, "-m", "mechgrok.cli", "--help"],
    "mechgrok train --help": [sys.executable, "-m", "mechgrok.cli", "train", "--help"],
    "(baseline) python -c pass": [sys.executable, "-c", "pass"],
}
GOAL_S = 1.0


def time_once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (rc {done.returncode}): {done.stderr.strip()[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command (default: 10)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs} must be >= 1; pass e.g. --runs 10")

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
          f"{args.runs} runs each")
    for cmd in COMMANDS.values():  # untimed: warm the file cache
        time_once(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            times[name].append(time_once(cmd))

    width = max(map(len, COMMANDS))
    print(f"{'command':<{width}}  {'median ms':>9}  {'min ms':>7}  {'max ms':>7}")
    for name, values in times.items():
        print(f"{name:<{width}}  {statistics.median(values) * 1e3:>9.0f}  {min(values) * 1e3:>7.0f}  "
              f"{max(values) * 1e3:>7.0f}")
    worst = max(statistics.median(times["mechgrok --help"]), statistics.median(times["mechgrok train --help"]))
    print(f"help median {worst * 1e3:.0f} ms: {'under' if worst < GOAL_S else 'OVER'} the {GOAL_S:g} s goal")
    return 0 if worst < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
