"""How fast a FER2013-sized CSV loads, and how much memory the load takes.

    python benchmarks/fer2013_load.py                 # generate a 35,887-row CSV in a temp folder, then measure
    python benchmarks/fer2013_load.py --csv fer2013.csv   # measure on a CSV you have (the real one)

The CSV is generated in FER2013's own format and proportions (28,709 Training, 3,589 PublicTest, 3,589
PrivateTest rows of 2,304 pixels) from the synthetic faces. Each measurement runs in a fresh process:
the baseline is its resident memory after the imports, the figure is its peak resident memory during
the load (the kernel's VmHWM, reset after the imports) minus that baseline. Targets: under 10 s, and
no more than twice the size of the uint8 images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROWS = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}  # FER2013's split sizes


def generate(path: str) -> None:
    import numpy as np

    from condgen_bench.datasets.export import synthetic_rows, write_fer2013_csv

    total = sum(ROWS.values())
    images, labels, _ = synthetic_rows(-(-total // 7))
    usages = np.repeat(list(ROWS), list(ROWS.values()))
    write_fer2013_csv(path, images[:total], labels[:total], usages.tolist())


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(path: str) -> dict:
    """Load ``path`` in this process; return seconds, image bytes and peak memory above the baseline."""
    from condgen_bench import datasets
    baseline = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (peak resident memory) to the current resident size
    t0 = time.perf_counter()
    data = datasets.load(datasets.DataConfig(name="fer2013", data_root=path, image_size=48))
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    image_bytes = sum(part.images.numel() for part in data.splits().values())
    return {"rows": sum(len(part) for part in data.splits().values()), "seconds": seconds,
            "image_bytes": image_bytes, "peak_above_baseline": peak - baseline,
            "after_load_above_baseline": _status("VmRSS") - baseline, "baseline": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", help="measure this CSV instead of a generated one")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes to measure in")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure in this process, print JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.csv
        if path is None:
            path = os.path.join(tmp, "fer2013.csv")
            t0 = time.perf_counter()
            generate(path)
            print(f"generated {path}: {os.path.getsize(path) / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--measure", path], check=True, capture_output=True,
                                 text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mb = 1024 * 1024
    print("\n| run | rows | load s | uint8 images MB | peak above baseline MB | ratio | held after load MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(runs, 1):
        print(f"| {i} | {r['rows']} | {r['seconds']:.2f} | {r['image_bytes'] / mb:.1f} | "
              f"{r['peak_above_baseline'] / mb:.1f} | {r['peak_above_baseline'] / r['image_bytes']:.2f} | "
              f"{r['after_load_above_baseline'] / mb:.1f} |")
    print(f"\nbaseline (after imports) {runs[0]['baseline'] / mb:.0f} MB; targets: < 10 s, ratio <= 2")


if __name__ == "__main__":
    main()
