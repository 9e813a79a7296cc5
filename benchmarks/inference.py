"""CPU inference and training-step throughput: is optimize_for_inference twice torchvision's speed?

googlenet at 224x224 and inception_v3 at 299x299, batch 1 and 16, random weights (speed does not
depend on them): torchvision's eager model with the same weights, inceptorch eager,
optimize_for_inference (and with compile=True unless --no-compile), and onnxruntime on the exported
model; then a training step (forward, backward, SGD step) at batch 16 for torchvision's model,
inceptorch eager and inceptorch channels-last. All in one process, the paths of each group timed in
interleaved rounds, so that the ratios hold even while the machine's load drifts.

Targets (issue 7, 2-core AVX2 CPU): optimize_for_inference at least 2.0x torchvision eager at batch
16 and at least 1.0x onnxruntime; a training step at least 1.2x torchvision's.

    .venv/bin/python benchmarks/inference.py [--threads 2] [--repeats 5] [--no-compile]

Prints the table and writes benchmarks/results/inference.json.
"""

import argparse
import logging
from pathlib import Path

from inceptorch.inference import benchmark

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("googlenet", "inception_v3")  # each at its own default input size: 224 and 299


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="threads for PyTorch and onnxruntime (default: PyTorch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per group (default 5)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out optimize_for_inference(compile=True), which compiles for minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    report = benchmark(MODELS, batches=(1, 16), train_batches=(16,), threads=args.threads, repeats=args.repeats,
                       compile=not args.no_compile)
    print(report.table())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.to_json() + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
