"""CPU inference: every path of googlenet and inception_v3 timed in one process, with accuracy on real images.

Speed: googlenet at 224x224 and inception_v3 at 299x299, batch 1 and 16, random weights (speed does
not depend on them): torchvision's eager model with the same weights, inceptorch eager, the torch
paths of optimize_for_inference (fp32, bf16 where the CPU has it, int8 through PT2E; with
--compile also compiled fp32 and bf16), and the engines: onnxruntime fp32 and OpenVINO at its
default precision (the peers, at their default settings), OpenVINO int8 through NNCF. The paths of
each group are timed in interleaved rounds; the CPU's name and ISA flags, and its fp32 and bf16
peaks measured with a large matrix product, head the notes.

Accuracy ("a faster path counts only if it keeps the predictions"), every path on real held-out
images, int8 calibrated on 256 training images:
- fashion: a googlenet_small (the fashion-mnist-fast recipe's model) trained here for --fashion-epochs
  on the first 8,000 Fashion-MNIST training images, scored on the last 2,000 (never trained on);
- catdog: a googlenet trained here for --catdog-epochs on four fifths of the 1,000 cat and dog photos
  at 128x128 (from random weights: no ImageNet weights exist offline), scored on the other fifth.

Targets (issue 14, batch 16 and batch 1, ratios within one run): on a CPU with AMX or AVX512-BF16,
inceptorch's best path >= 1.0x the faster of onnxruntime fp32 and OpenVINO default, and the torch bf16
path >= 5x torchvision eager fp32; bf16 top-1 agreement >= 99.5% and accuracy within 0.2 points of
fp32; int8 agreement >= 99% and within 0.5 points. Issue 7's: torch fp32 >= 2.0x torchvision eager
and >= 1.0x onnxruntime (with --train: a training step >= 1.2x torchvision's).

    PYTHONPATH=. flock /tmp/cpu.lock .venv/bin/python benchmarks/inference.py [--threads 2] [--repeats 5] [--runs 1]
        [--compile] [--train] [--data-root DATA]

Prints the tables and writes benchmarks/results/inference.json.
"""

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inceptorch.errors import InceptorchError
from inceptorch.images import INCEPTION_MEAN, INCEPTION_STD, Preprocessing, image_files, read_image
from inceptorch.inference import benchmark
from inceptorch.inference.bench import PEERS, bench_paths, build_bench_path
from inceptorch.models import create_model
from inceptorch.sources import read_idx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("googlenet", "inception_v3")  # each at its own default input size: 224 and 299
OURS = ("torch fp32", "torch fp32 compiled", "torch bf16", "torch bf16 compiled", "torch int8")
ENGINES = ("openvino int8",)  # inceptorch's own paths through an engine (NNCF quantization)
# (task, path, the path it is compared with, the target ratio)
TARGETS = (("inference", "best torch path", "best peer", 1.0),
           ("inference", "best inceptorch path", "best peer", 1.0),
           ("inference", "torch bf16", "reference", 5.0),
           ("inference", "torch fp32", "reference", 2.0),
           ("inference", "torch fp32", "onnxruntime fp32", 1.0),
           ("train step", "inceptorch channels-last", "reference", 1.2))
ACCURACY_TARGETS = {"bf16": (0.995, 0.002), "int8": (0.99, 0.005)}  # agreement, accuracy drop at most



def _top1(call, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The top-1 class of every image, in batches of one shape (compiled paths compile per shape): the
    last batch reaches back over images already seen."""
    classes = []
    for start in range(0, len(images), batch_size):
        end = min(start + batch_size, len(images))
        first = max(0, end - batch_size)
        classes.append(call(images[first:end]).argmax(1)[start - first:])
    return torch.cat(classes)


def accuracy_of_paths(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, paths: list[str],
                      calibration: torch.Tensor, batch_size: int = 64) -> dict:
    """{path: {"agreement": top-1 agreement with fp32 eager, "accuracy": on ``labels``}} of a trained
    model on real held-out images: a faster path counts only if it keeps the predictions."""
    model = model.eval()
    with torch.no_grad():
        expected = _top1(model, images, batch_size)
    scores = {"inceptorch eager": {"agreement": 1.0, "accuracy": (expected == labels).float().mean().item()}}
    batches = list(calibration.split(16))
    for path in paths:
        try:
            built = build_bench_path(model, path, images[:batch_size], batches)
        except InceptorchError as e:
            logging.getLogger("inceptorch").warning("accuracy: %s left out: %s", path, e)
            continue
        predicted = _top1(built, images, batch_size)
        scores[path] = {"agreement": (predicted == expected).float().mean().item(),
                        "accuracy": (predicted == labels).float().mean().item()}
    return scores


def _speed(paths: dict, names) -> tuple[str, float] | None:
    found = [(paths[n]["images_per_s"], n) for n in names if n in paths]
    return max(found)[::-1] if found else None


def target_ratios(rows: list[dict]) -> dict:
    """{(model, task, batch, path, compared with, target): throughput ratio}, the target comparisons of
    one run; "reference" is the first path of each group (torchvision's eager model)."""
    by_group = {}
    for row in rows:
        by_group.setdefault((row["model"], row["task"], row["batch"]), {})[row["path"]] = row
    ratios = {}
    for (model, task, batch), paths in by_group.items():
        named = {"reference": _speed(paths, [next(iter(paths))]), "best peer": _speed(paths, PEERS),
                 "best torch path": _speed(paths, OURS), "best inceptorch path": _speed(paths, OURS + ENGINES)}
        for target_task, path, against, target in TARGETS:
            mine = named.get(path) or _speed(paths, [path])
            other = named.get(against) or _speed(paths, [against])
            if task == target_task and mine and other:
                ratios[(model, task, batch, f"{path} ({mine[0]})" if path in named else path, against, target)] = (
                    mine[1] / other[1])
    return ratios


def median_table(runs: list[dict]) -> tuple[str, list[dict]]:
    per_run = [target_ratios(run["rows"]) for run in runs]
    header = (f"{'model':<13} {'task':<11} {'batch':>5}  {'path':<40} {'over':<17} {'median':>7}  "
              f"{'runs':<14} target")
    lines, summary = [header], []
    for key in per_run[0]:
        model, task, batch, path, other, target = key
        values = [ratios[key] for ratios in per_run if key in ratios]
        median = statistics.median(values)
        summary.append({"model": model, "task": task, "batch": batch, "path": path, "over": other,
                        "median": median, "runs": values, "target": target})
        lines.append(f"{model:<13} {task:<11} {batch:>5}  {path:<40} {other:<17} {median:6.2f}x  "
                     f"{' '.join(f'{v:.2f}' for v in values):<14} {target:.1f}x "
                     f"{'met' if median >= target else 'not met'}")
    return "\n".join(lines), summary


def accuracy_targets(accuracy: dict) -> str:
    lines = [f"{'task':<7} {'path':<20} {'agree':>7} {'acc':>7} {'fp32 acc':>8}  target"]
    for task, scores in accuracy.items():
        fp32 = scores["inceptorch eager"]["accuracy"]
        for path, s in scores.items():
            precision = next((p for p in ACCURACY_TARGETS if p in path or (p == "bf16" and path == "openvino default")),
                             None)
            if precision is None:
                continue
            agree, drop = ACCURACY_TARGETS[precision]
            met = s["agreement"] >= agree and fp32 - s["accuracy"] <= drop + 1e-9
            lines.append(f"{task:<7} {path:<20} {s['agreement']:7.2%} {s['accuracy']:7.2%} {fp32:8.2%}  "
                         f"agree >= {agree:.1%}, within {drop * 100:.1f} pt: {'met' if met else 'not met'}")
    return "\n".join(lines)


def _train(model, x, y, epochs: int, lr: float, batch: int = 64, flip: bool = True):
    """A short one-cycle AdamW run, channels-last: enough for predictions worth checking."""
    model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(batch):
            inputs = x[index]
            if flip:
                inputs = torch.where(torch.rand(len(inputs), 1, 1, 1, generator=generator) < 0.5,
                                     inputs.flip(-1), inputs)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs.contiguous(memory_format=torch.channels_last)), y[index]).backward()
            optimizer.step()
            schedule.step()
    return model.eval().to(memory_format=torch.contiguous_format)


def fashion_task(root: Path, epochs: int):
    folder = root / "FashionMNIST" / "raw"
    images = torch.from_numpy(read_idx(folder / "train-images-idx3-ubyte.gz").copy()).float().div(255)
    labels = torch.from_numpy(read_idx(folder / "train-labels-idx1-ubyte.gz").copy()).long()
    images = images.sub(0.286).div(0.353)[:, None]  # Fashion-MNIST's pixel mean and std
    model = create_model("googlenet_small", in_chans=1, num_classes=10, width=0.375)
    model = _train(model, images[:8000], labels[:8000], epochs, lr=3e-3)
    return model, images[-2000:], labels[-2000:], images[:256]


def catdog_task(root: Path, epochs: int, side: int = 128):
    transform = Preprocessing(side, round(side / 0.875), INCEPTION_MEAN, INCEPTION_STD).transform()
    files = image_files([root / "cats_vs_dogs" / "train"])
    images = torch.stack([transform(read_image(f)) for f in files])
    labels = torch.tensor([0 if f.parent.name == "cat" else 1 for f in files])
    held_out = torch.arange(len(files)) % 5 == 0
    model = create_model("googlenet", num_classes=2)
    model = _train(model, images[~held_out], labels[~held_out], epochs, lr=2e-3, batch=32)
    return model, images[held_out], labels[held_out], images[~held_out][:256]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="threads for PyTorch and the engines (default: PyTorch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per group (default 5)")
    parser.add_argument("--runs", type=int, default=1, help="whole speed runs, for the medians (default 1)")
    parser.add_argument("--compile", action="store_true", help="add torch fp32 and bf16 compiled (minutes more)")
    parser.add_argument("--train", action="store_true", help="add training steps at batch 16 (issue 7)")
    parser.add_argument("--data-root", type=Path, default=os.environ.get("INCEPTORCH_DATA", ROOT.parent / "shared" / "data"),
                        help="the real data (default: $INCEPTORCH_DATA, else ../shared/data)")
    parser.add_argument("--fashion-epochs", type=int, default=2)
    parser.add_argument("--catdog-epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    accuracy, started = {}, time.perf_counter()
    paths = bench_paths(compile=args.compile)
    for task, build, epochs in (("fashion", fashion_task, args.fashion_epochs),
                                ("catdog", catdog_task, args.catdog_epochs)):
        start = time.perf_counter()
        model, images, labels, calibration = build(args.data_root, epochs)
        print(f"{task}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        accuracy[task] = accuracy_of_paths(model, images, labels, paths, calibration)
        print(f"{task}: {json.dumps(accuracy[task])}", flush=True)
    runs = []
    for run in range(1, args.runs + 1):
        report = benchmark(MODELS, batches=(1, 16), train_batches=(16,) if args.train else (),
                           threads=args.threads, repeats=args.repeats, compile=args.compile)
        report.accuracy = accuracy
        print(f"\nrun {run} of {args.runs}\n{report.table()}", flush=True)
        runs.append(report.to_dict())
    table, summary = median_table(runs)
    print(f"\nmedian over {args.runs} run(s) of each ratio, taken within a run\n{table}")
    print(f"\naccuracy on real held-out images (fashion: {len(accuracy['fashion'])} paths on 2,000 Fashion-MNIST "
          f"images; catdog: on 200 cat and dog photos)\n{accuracy_targets(accuracy)}")
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "medians": summary, "accuracy": accuracy}, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
