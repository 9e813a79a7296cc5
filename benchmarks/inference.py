"""CPU inference and training-step throughput: is optimize_for_inference twice torchvision's speed?

googlenet at 224x224 and inception_v3 at 299x299, batch 1 and 16, random weights (speed does not
depend on them): torchvision's eager model with the same weights, inceptorch eager,
optimize_for_inference (and with compile=True unless --no-compile), and onnxruntime on the exported
model; then a training step (forward, backward, SGD step) at batch 16 for torchvision's model,
inceptorch eager and inceptorch channels-last. All in one process, the paths of each group timed in
interleaved rounds, so that the ratios hold even while the machine's load drifts.

Targets (issue 7, 2-core AVX2 CPU): optimize_for_inference at least 2.0x torchvision eager at batch
16 and at least 1.0x onnxruntime; a training step at least 1.2x torchvision's. With ``--runs N`` the
whole benchmark runs N times and a last table gives the median of each target ratio over the runs
(each ratio taken within one run).

    .venv/bin/python benchmarks/inference.py [--threads 2] [--repeats 5] [--runs 3] [--no-compile]

Prints the tables and writes benchmarks/results/inference.json.
"""

import argparse
import json
import logging
import statistics
from pathlib import Path

from inceptorch.inference import benchmark

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("googlenet", "inception_v3")  # each at its own default input size: 224 and 299
# (task, path, the path it is compared with, the target ratio)
TARGETS = (("inference", "optimize_for_inference", "reference", 2.0),
           ("inference", "optimize_for_inference", "onnxruntime", 1.0),
           ("train step", "inceptorch channels-last", "reference", 1.2))


def target_ratios(rows: list[dict]) -> dict:
    """{(model, task, batch, path, compared with, target): throughput ratio}, the target comparisons of
    one run; "reference" is the first path of each group (torchvision's eager model)."""
    by_group = {}
    for row in rows:
        by_group.setdefault((row["model"], row["task"], row["batch"]), {})[row["path"]] = row
    ratios = {}
    for (model, task, batch), paths in by_group.items():
        for target_task, path, against, target in TARGETS:
            other = next(iter(paths)) if against == "reference" else against
            if task == target_task and path in paths and other in paths:
                ratios[(model, task, batch, path, other, target)] = (paths[path]["images_per_s"]
                                                                     / paths[other]["images_per_s"])
    return ratios


def median_table(runs: list[dict]) -> tuple[str, list[dict]]:
    per_run = [target_ratios(run["rows"]) for run in runs]
    header = (f"{'model':<13} {'task':<11} {'batch':>5}  {'path':<25} {'over':<18} {'median':>7}  "
              f"{'runs':<20} target")
    lines = [header]
    summary = []
    for key in per_run[0]:
        model, task, batch, path, other, target = key
        values = [ratios[key] for ratios in per_run if key in ratios]
        median = statistics.median(values)
        summary.append({"model": model, "task": task, "batch": batch, "path": path, "over": other,
                        "median": median, "runs": values, "target": target})
        lines.append(f"{model:<13} {task:<11} {batch:>5}  {path:<25} {other:<18} {median:6.2f}x  "
                     f"{' '.join(f'{v:.2f}' for v in values):<20} {target:.1f}x "
                     f"{'met' if median >= target else 'not met'}")
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="threads for PyTorch and onnxruntime (default: PyTorch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per group (default 5)")
    parser.add_argument("--runs", type=int, default=1, help="whole benchmark runs, for the medians (default 1)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out optimize_for_inference(compile=True), which compiles for minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    runs = []
    for run in range(1, args.runs + 1):
        report = benchmark(MODELS, batches=(1, 16), train_batches=(16,), threads=args.threads,
                           repeats=args.repeats, compile=not args.no_compile)
        print(f"\nrun {run} of {args.runs}\n{report.table()}", flush=True)
        runs.append(report.to_dict())
    table, summary = median_table(runs)
    print(f"\nmedian over {args.runs} run(s) of each ratio, taken within a run\n{table}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "medians": summary}, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
