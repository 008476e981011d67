"""Write the frozen golden reference of a small run (``python -m tests.golden.make_golden``).

The reference pins the paper model's numbers across refactors: a p=23 run trained with
mechgrok's own trainer on one thread with no process tuning, then its metrics, its final
weights, its progress measures at every checkpoint and its §4.4 table. ``tests/test_golden.py``
recomputes all of them and compares bit for bit on the machine that wrote them (the CPU model
and torch version are recorded in ``meta.json``); on another CPU, kernels may round
differently, and the test compares to a tolerance instead.

Regenerate only when a change is meant to move a number, and say so in the commit.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compute(out_dir: Path) -> dict:
    """Train the golden run into ``out_dir`` and return every golden table and the final weights."""
    from tests.golden._api import compute_golden

    return compute_golden(out_dir)


def main() -> int:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = compute(Path(tmp) / "run")
    result["metrics"].drop(columns="elapsed_s").to_csv(HERE / "metrics.csv", index=False, float_format="%.17g")
    result["measures"].to_csv(HERE / "progress.csv", index=False, float_format="%.17g")
    result["section_4_4"].to_csv(HERE / "section_4_4.csv", index=False, float_format="%.17g")
    save_file({k: v.contiguous() for k, v in result["weights"].items()}, str(HERE / "final_weights.safetensors"))
    meta = {"cpu": cpu_model(), "torch": torch.__version__, "python": sys.version.split()[0],
            "key_frequencies": result["key_frequencies"], "config": result["config"]}
    (HERE / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote the golden reference to {HERE} (key frequencies {result['key_frequencies']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
