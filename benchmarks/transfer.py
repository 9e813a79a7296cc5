"""Transfer learning on real photos: does a CIFAR-10 backbone beat training from scratch in the same time?

The source is the ``cifar10-fast`` recipe's checkpoint (googlenet_small trained on the 50,000
CIFAR-10 JPEGs, 32x32 photos of ten classes, cat and dog among them), trained first when
``--source`` does not exist. It is fine-tuned on the 800 training photos of cats_vs_dogs in two
phases: the backbone frozen (a linear probe: only the classifier learns), then everything (the
backbone at a lower learning rate, ``--unfreeze-after``). The same network is trained from scratch
on the same photos for the same wall-clock time as the whole fine-tuning run. Both are run at 32x32
(the source's size) and 64x64 input, and scored on the same 200 held-out photos (every fifth of each
class), which no run trains on, with each run's last checkpoint and the mirror image averaged in.

The photos are decoded once (shorter side resized, center crop) into .npz files, so that images/s
measure the network, not JPEG decoding of 1000 large files.

    PYTHONPATH=. python benchmarks/transfer.py [--data-root ../shared/data] [--source runs/cifar10/best.safetensors]

Prints a table and writes benchmarks/results/transfer.json; the run folders (metrics, curves.png,
confusion.png, per_class.json, checkpoints) go to --work-dir.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import inceptorch
from inceptorch.cpu import describe, machine
from inceptorch.images import read_image
from inceptorch.tables import text_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SOURCE_RECIPE = "cifar10-fast"


def photos_to_npz(folder: Path, size: int, out: Path) -> Path:
    """cats_vs_dogs/train/<class>/*.jpg -> an .npz with a fixed validation split (every fifth photo)."""
    if out.is_file():
        return out
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    arrays = {"train": ([], []), "val": ([], [])}
    for label, name in enumerate(classes):
        files = sorted((folder / name).glob("*.jpg"), key=lambda p: int(p.stem.split(".")[-1]))
        for i, path in enumerate(files):
            image = read_image(path)
            scale = size / min(image.size)
            image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                 resample=3)  # bicubic
            left, top = (image.width - size) // 2, (image.height - size) // 2
            split = "val" if i % 5 == 4 else "train"
            arrays[split][0].append(np.asarray(image.crop((left, top, left + size, top + size))))
            arrays[split][1].append(label)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, class_names=np.array(classes), **{f"{split}_{kind}": np.array(values, dtype=dtype)
             for split, (images, labels) in arrays.items()
             for kind, values, dtype in (("images", images, np.uint8), ("labels", labels, np.int64))})
    return out


def train_source(data_root: str, out: Path) -> dict:
    """The cifar10-fast recipe, through the command as a user runs it (wall time of the whole command)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "inceptorch.cli", "train", "--recipe", SOURCE_RECIPE, "--data-root",
                    data_root, "--out-dir", str(out.parent.parent), "--name", out.parent.name, "--quiet"],
                   check=True, cwd=ROOT)
    return {"wall_seconds": time.perf_counter() - started}


def source_history(source: Path) -> list[dict]:
    """The source run's per-epoch metrics (validation accuracy, images/s, seconds), where it has them."""
    metrics = source.parent / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else []


def timed(function, options: dict):
    """Runs ``function(options)`` in a fresh run folder (an earlier run of this script's is replaced)."""
    shutil.rmtree(Path(options["out_dir"]) / options["name"], ignore_errors=True)
    start = time.perf_counter()
    result = function(options)
    return result, time.perf_counter() - start


def report_of(run_dir: Path, npz: Path) -> dict:
    """Accuracy, per-class precision/recall and confusion of the run's last checkpoint on the held-out photos."""
    result = inceptorch.evaluate(run_dir / "last.safetensors", str(npz), workers=0, test_flip=True)
    return {"accuracy": result.accuracy, "per_class": result.per_class, "confusion": result.confusion}


def finetune(source: Path, npz: Path, size: int, args, common: dict) -> dict:
    """Phase 1 the classifier only (linear probe), phase 2 everything, the backbone at a lower rate."""
    epochs = args.frozen_epochs + args.unfrozen_epochs
    run, wall = timed(inceptorch.finetune, {
        **common, "data": str(npz), "weights": str(source), "image_size": size, "freeze": "backbone",
        "unfreeze_after": args.frozen_epochs, "epochs": epochs, "lr": args.lr, "lr_unfrozen": args.lr_unfrozen,
        "name": f"finetuned-{size}px"})
    frozen, full = run.history[:args.frozen_epochs], run.history[args.frozen_epochs:]
    return {"epochs": f"{args.frozen_epochs}+{args.unfrozen_epochs}",
            "train_seconds": sum(r["seconds"] for r in run.history), "wall_seconds": wall,
            "held_out_acc_linear_probe": frozen[-1]["val_acc"],
            "images_per_s_linear_probe": float(np.median([r["images_per_s"] for r in frozen])),
            "images_per_s_full": float(np.median([r["images_per_s"] for r in full])),
            "full_epoch_seconds": float(np.median([r["seconds"] for r in full])),
            "run_dir": str(run.run_dir), **report_of(run.run_dir, npz)}


def scratch(npz: Path, size: int, budget_s: float, epoch_s: float, network: dict, args, common: dict) -> dict:
    """The same network from random weights, for as many whole epochs as fit in the fine-tuning time."""
    epochs = max(1, round(budget_s / epoch_s))
    run, wall = timed(inceptorch.train, {**common, **network, "data": str(npz), "image_size": size,
                                         "epochs": epochs, "lr": args.lr, "name": f"scratch-{size}px"})
    return {"epochs": str(epochs), "train_seconds": sum(r["seconds"] for r in run.history), "wall_seconds": wall,
            "images_per_s_full": float(np.median([r["images_per_s"] for r in run.history])),
            "run_dir": str(run.run_dir), **report_of(run.run_dir, npz)}


def table(results: dict) -> str:
    header = ["input", "start", "epochs", "train s", "held-out acc", "linear probe acc", "img/s probe/full",
              "cat P/R", "dog P/R", "confusion [[cc cd] [dc dd]]"]
    lines = []
    for size, arms in results["runs"].items():
        for label, r in (("CIFAR-10 fine-tuned", arms["finetuned"]), ("scratch, same time", arms["scratch"])):
            probe = r.get("held_out_acc_linear_probe")
            speeds = (f"{r['images_per_s_linear_probe']:.0f}/" if probe is not None else "-/") + \
                f"{r['images_per_s_full']:.0f}"
            per_class = [f"{v['precision']:.2f}/{v['recall']:.2f}" for v in r["per_class"].values()]
            lines.append([f"{size}x{size}", label, r["epochs"], f"{r['train_seconds']:.0f}", f"{r['accuracy']:.3f}",
                          "-" if probe is None else f"{probe:.3f}", speeds, *per_class, str(r["confusion"])])
    return text_table(header, lines, left=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("INCEPTORCH_DATA", str(ROOT.parent / "shared/data")))
    parser.add_argument("--source", default=str(ROOT / "runs" / "cifar10" / "best.safetensors"),
                        help="the CIFAR-10 checkpoint (trained with the cifar10-fast recipe when missing)")
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "transfer-benchmark"))
    parser.add_argument("--sizes", default="32,64", help="input sides to compare, comma separated")
    parser.add_argument("--frozen-epochs", type=int, default=3, help="fine-tuning phase 1: the classifier only")
    parser.add_argument("--unfrozen-epochs", type=int, default=12, help="fine-tuning phase 2: everything")
    parser.add_argument("--lr", type=float, default=0.05, help="peak rate of the head, and of scratch training")
    parser.add_argument("--lr-unfrozen", type=float, default=0.01, help="peak rate of the backbone in phase 2")
    args = parser.parse_args()
    work, source = Path(args.work_dir), Path(args.source)
    where = {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # before any training
    photos = Path(args.data_root) / "cats_vs_dogs" / "train"
    common = {"batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
              "augment": "flip,crop", "test_flip": True, "channels_last": True, "amp": True,
              "out_dir": str(work), "quiet": True, "workers": 0, "seed": 0}
    source_run = train_source(args.data_root, source) if not source.is_file() else None
    source_meta = inceptorch.weights.read_metadata(source)
    network = {"model": source_meta["model"], "model_args": {  # what finetune reads from the checkpoint
        k: v for k, v in source_meta["build_config"].items() if k not in ("num_classes", "in_chans", "aux_logits")}}
    results = {"model": network, "machine": where,
               "photos": {"train": 800, "held_out": 200, "held_out_rule": "every fifth photo of each class"},
               "source": {"checkpoint": str(source), "recipe": SOURCE_RECIPE, "epoch": source_meta.get("epoch"),
                          "cifar10_val_acc": source_meta.get("val_acc"), **(source_run or {}),
                          "history": source_history(source)},
               "settings": {**{k: v for k, v in vars(args).items() if k.endswith(("epochs", "lr", "unfrozen"))},
                            **{k: common[k] for k in ("batch_size", "augment", "amp", "channels_last")}},
               "runs": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        npz = photos_to_npz(photos, size, work / f"cats_vs_dogs_{size}.npz")
        tuned = finetune(source, npz, size, args, common)
        results["runs"][size] = {"finetuned": tuned, "scratch": scratch(npz, size, tuned["train_seconds"],
                                                                        tuned["full_epoch_seconds"], network, args,
                                                                        common)}
    print(f"\n{network['model']} {network['model_args']} from the {SOURCE_RECIPE} checkpoint (CIFAR-10 val acc "
          f"{source_meta.get('val_acc'):.4f}) vs from scratch in the same time, on "
          f"{describe(where)}, {where['threads']} threads; held out: 200 "
          "cats_vs_dogs photos (100 a class), last checkpoint of each run, mirror averaged\n")
    print(table(results))
    out = RESULTS / "transfer.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
