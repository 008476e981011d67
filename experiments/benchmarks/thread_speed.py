"""Torch/OpenMP thread count for training: 1 against 2 threads, on an idle and on a busy machine.

    .venv/bin/python experiments/benchmarks/thread_speed.py                  # 3 rounds, 200 epochs
    .venv/bin/python experiments/benchmarks/thread_speed.py --rounds 5 --epochs 300

Each measurement trains the paper's p=113 model (``Config()`` defaults) with ``mechgrok.train``
into a temporary run folder, in a fresh subprocess whose ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``MECHGROK_THREADS``, ``torch.set_num_threads`` and ``train(threads=...)`` (where ``train`` takes
it) are N; every metrics row reports the torch thread count in force, and a mismatch is an
error. Milliseconds per epoch come from the ``elapsed_s`` of the
metrics rows, from the first row at or after ``--warmup`` epochs to the last one, so process
start-up, imports and the first steps are excluded (checkpoint writes every 100 epochs are
included, as in real training). A measurement stops early, at the next metrics row, once it
has timed ``--max-seconds``, and is killed after ``--worker-timeout`` (then timed from the rows it
wrote, from epoch 0 if need be: column "from"); a machine that collapses does not stall it.

"busy" runs a competing two-thread torch job beside the measurement: a subprocess doing
1024x1024 float32 matmuls with ``torch.set_num_threads(2)`` in a loop. It starts (and reports
ready) before the measurement and is killed after it; it also exits by itself 60 s after
``--worker-timeout`` or when this script dies. Its matmul rate is printed too: how much
the training slows the other job.

Rounds interleave the four (threads, condition) combinations, in rotated order. The script
prints each measurement, the medians per combination, and for each candidate default N the
ratio busy(N)/busy(1) (acceptance: <= 1.5) and idle(N)/idle(best).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = (1, 2)
CONDITIONS = ("idle", "busy")
BUSY_LIMIT = 1.5  # the acceptance criterion on busy(default)/busy(1 thread)


# ---------------------------------------------------------------- machine description


def cpu_model() -> str:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, "
            f"{info.get('cpu MHz', '?')} MHz, {'/'.join(simd) or 'no avx2'})")


def cpu_busy_fraction(seconds: float = 0.5) -> float:
    """Share of all CPUs' time that was busy over ``seconds`` (/proc/stat), 0..1."""

    def snapshot() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["MECHGROK_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------- worker: one timed training run


class _Enough(Exception):
    pass


def worker(threads: int, epochs: int, warmup: int, max_seconds: float) -> int:
    """Train, printing one JSON line per metrics row; stop early after ``max_seconds`` timed."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from mechgrok.config import Config

    from mechgrok.training.loop import train

    kwargs = {"threads": threads}  # train() sets the thread count itself (mechgrok.speed.torch_threads)
    first: list[float] = []

    def on_eval(row: dict) -> None:
        # the thread count in force while training, checked by the driver
        print(json.dumps({"epoch": int(row["epoch"]), "elapsed_s": float(row["elapsed_s"]),
                          "torch_threads": torch.get_num_threads()}), flush=True)
        if row["epoch"] >= warmup:
            if not first:
                first.append(row["elapsed_s"])
            elif row["elapsed_s"] - first[0] >= max_seconds:
                raise _Enough

    with tempfile.TemporaryDirectory(prefix="thread_speed_") as tmp:
        try:
            train(Config().replace(epochs=epochs), Path(tmp) / "run", progress=False, on_eval=on_eval, **kwargs)
        except _Enough:
            pass
    return 0


def ms_per_epoch(rows: list[dict], warmup: int) -> tuple[float, int, int]:
    """(ms/epoch, epochs timed, first epoch timed) from the metrics rows at or after ``warmup``,
    or from epoch 0 (still after start-up) when a slow run has too few rows past the warm-up."""
    kept = [r for r in rows if r["epoch"] >= warmup]
    if len(kept) < 2:
        kept = rows
    if len(kept) < 2:
        return float("nan"), 0, -1
    n = kept[-1]["epoch"] - kept[0]["epoch"]
    return 1e3 * (kept[-1]["elapsed_s"] - kept[0]["elapsed_s"]) / n, n, kept[0]["epoch"]


# ---------------------------------------------------------------- competitor: a two-thread torch job


def competitor(life_s: float, parent: int) -> int:
    import torch

    torch.set_num_threads(2)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    deadline = time.monotonic() + life_s
    a @ b
    print("ready", flush=True)
    count, t0 = 0, time.perf_counter()
    while not stop and time.monotonic() < deadline and os.getppid() == parent:
        a @ b
        count += 1
    elapsed = time.perf_counter() - t0
    print(json.dumps({"matmuls": count, "seconds": elapsed}), flush=True)
    return 0


def start_competitor(life_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--competitor", str(life_s), "--parent", str(os.getpid())],
        env=thread_env(2), stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()  # blocks until its first matmul is done
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the competitor did not start (said {line!r})")
    return proc


def stop_competitor(proc: subprocess.Popen) -> float:
    """Stop it; return its matmul rate (per second) while it ran."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return float("nan")
    try:
        stats = json.loads(out.strip().splitlines()[-1])
        return stats["matmuls"] / stats["seconds"]
    except (ValueError, IndexError, KeyError, ZeroDivisionError):
        return float("nan")


# ---------------------------------------------------------------- driver


def measure(threads: int, busy: bool, args: argparse.Namespace) -> dict:
    load1 = os.getloadavg()[0]
    background = cpu_busy_fraction()  # before the competitor: what else was running
    comp = start_competitor(args.worker_timeout + 60) if busy else None
    cmd = [sys.executable, __file__, "--worker", str(threads), "--epochs", str(args.epochs),
           "--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)]
    try:
        proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True,
                              timeout=args.worker_timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # keep the rows it printed before the timeout
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = "timed out", -9
    finally:
        rate = stop_competitor(comp) if comp is not None else float("nan")
    rows = [r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{")) if "epoch" in r]
    ms, n, first = ms_per_epoch(rows, args.warmup)
    what = f"the {threads}-thread {'busy' if busy else 'idle'} measurement"
    if n == 0:
        sys.exit(f"{what} failed (rc {rc}): {err.strip()[-3000:]}")
    seen = {r.get("torch_threads") for r in rows}
    if seen != {threads}:
        sys.exit(f"{what} trained with torch thread counts {sorted(seen)}, not {threads}")
    return {"threads": threads, "condition": "busy" if busy else "idle", "ms": ms, "epochs": n, "first": first,
            "load1": load1, "background": background, "competitor_rate": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians over them)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="epochs not timed at the start of each run")
    parser.add_argument("--max-seconds", type=float, default=8.0,
                        help="stop a measurement at the next metrics row after timing this long")
    parser.add_argument("--worker-timeout", type=float, default=60.0,
                        help="hard limit on one measurement (a collapsed run is timed from the rows it wrote)")
    parser.add_argument("--worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    parser.add_argument("--competitor", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.epochs, args.warmup, args.max_seconds)
    if args.competitor is not None:
        return competitor(args.competitor, args.parent)

    import torch

    print(f"CPU: {cpu_model()}")
    print(f"cores: {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable); torch {torch.__version__}; "
          f"python {platform.python_version()}; load average now {os.getloadavg()[0]:.2f}")
    print(f"p=113 paper config, {args.epochs} epochs per measurement (warm-up {args.warmup}, at most "
          f"~{args.max_seconds:g} s timed), {args.rounds} rounds; busy = a 2-thread 1024^2 matmul loop beside it")
    print(f"{'round':>5} {'threads':>7} {'condition':>9} {'ms/epoch':>9} {'epochs':>6} {'from':>4} "
          f"{'load1':>5} {'bg cpu':>6} {'competitor matmul/s':>19}", flush=True)
    measure(2, False, argparse.Namespace(**{**vars(args), "epochs": 30, "max_seconds": 1.0, "worker_timeout": 30.0}))  # warm the caches
    combos = [(t, c) for t in THREADS for c in CONDITIONS]
    results: list[dict] = []
    for r in range(args.rounds):
        order = combos[r % len(combos):] + combos[:r % len(combos)]
        for threads, condition in order:
            res = measure(threads, condition == "busy", args)
            results.append(res)
            print(f"{r + 1:>5} {threads:>7} {condition:>9} {res['ms']:>9.1f} {res['epochs']:>6} {res['first']:>4} "
                  f"{res['load1']:>5.2f} {res['background']:>6.0%} {res['competitor_rate']:>19.1f}", flush=True)

    def med(threads: int, condition: str, key: str = "ms") -> float:
        values = [r[key] for r in results if r["threads"] == threads and r["condition"] == condition
                  and r[key] == r[key]]
        return statistics.median(values) if values else float("nan")

    print()
    print(f"median ms/epoch over {args.rounds} rounds (min..max)")
    print(f"{'threads':>7} {'idle':>22} {'busy':>22} {'busy/idle':>9} {'competitor matmul/s':>19}")
    for t in THREADS:
        cells = []
        for c in CONDITIONS:
            vals = [r["ms"] for r in results if r["threads"] == t and r["condition"] == c and r["ms"] == r["ms"]]
            cells.append(f"{med(t, c):7.1f} ({min(vals):.1f}..{max(vals):.1f})" if vals else "n/a")
        print(f"{t:>7} {cells[0]:>22} {cells[1]:>22} {med(t, 'busy') / med(t, 'idle'):>9.2f} "
              f"{med(t, 'busy', 'competitor_rate'):>19.1f}")
    best_idle = min(med(t, "idle") for t in THREADS)
    print()
    print(f"candidate default  busy(N)/busy(1)  (<= {BUSY_LIMIT} needed)  idle(N)/idle(best)")
    for t in THREADS:
        ratio = med(t, "busy") / med(1, "busy")
        verdict = "ok" if ratio <= BUSY_LIMIT else "FAILS"
        print(f"{t:>17}  {ratio:>15.2f}  {verdict:>17}  {med(t, 'idle') / best_idle:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
