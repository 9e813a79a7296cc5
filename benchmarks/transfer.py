"""Transfer learning on real photos: does a pretrained backbone beat training from scratch in the same time?

Without network there are no ImageNet weights, so the source model is trained here, on another task:
googlenet_small on Fashion-MNIST (grey clothing, repeated to RGB). It is then fine-tuned on the cats
and dogs photos (a first phase with the backbone frozen, a second with everything trained at a lower
learning rate), and compared with the same network trained from scratch for the same wall-clock time.
Both are scored on the same held-out photos (every fifth photo of each class, never trained on).

The photos are decoded once (shorter side resized to --size, center crop) into an .npz, so that the
images/s figures measure the network, not JPEG decoding.

    .venv/bin/python benchmarks/transfer.py [--data-root ../shared/data] [--size 32]

Prints a table and writes benchmarks/results/transfer.json; the run folders (metrics, curves.png,
confusion.png, per_class.json, checkpoints) go to --work-dir.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import inceptorch
from inceptorch.predict import read_image

ROOT = Path(__file__).resolve().parent.parent
MODEL = "googlenet_small"


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


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def report_of(run_dir: Path, npz: Path) -> dict:
    """Accuracy, per-class precision/recall and confusion of the run's last checkpoint on the held-out photos."""
    result = inceptorch.evaluate(run_dir / "last.safetensors", str(npz), workers=0)
    return {"accuracy": result.accuracy, "per_class": result.per_class, "confusion": result.confusion,
            "confusion_png": str(run_dir / "confusion.png")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("INCEPTORCH_DATA", str(ROOT.parent / "shared/data")))
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "transfer-benchmark"))
    parser.add_argument("--size", type=int, default=32, help="side of the photos given to the network")
    parser.add_argument("--source-samples", type=int, default=6000, help="Fashion-MNIST images for the source")
    parser.add_argument("--source-epochs", type=int, default=2)
    parser.add_argument("--frozen-epochs", type=int, default=3, help="fine-tuning phase 1: heads only")
    parser.add_argument("--unfrozen-epochs", type=int, default=6, help="fine-tuning phase 2: everything")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    common = {"model": MODEL, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
              "augment": "flip,crop", "out_dir": str(work), "quiet": True, "workers": 0, "seed": 0}

    npz, prep_seconds = timed(photos_to_npz, Path(args.data_root) / "cats_vs_dogs" / "train", args.size,
                              work / f"cats_vs_dogs_{args.size}.npz")

    source, source_seconds = timed(inceptorch.train, {
        **common, "data": "fashion-mnist", "data_root": args.data_root, "in_chans": 3, "epochs": args.source_epochs,
        "lr": 0.1, "train_samples": args.source_samples, "val_samples": 2000, "name": "source-fashion-mnist"})

    epochs = args.frozen_epochs + args.unfrozen_epochs
    tuned, tuned_seconds = timed(inceptorch.finetune, {
        **common, "data": str(npz), "weights": str(source.run_dir / "last.safetensors"), "image_size": args.size,
        "freeze": "backbone", "unfreeze_after": args.frozen_epochs, "epochs": epochs, "lr": 0.05,
        "lr_unfrozen": 0.02, "name": "finetuned"})
    frozen_rows, unfrozen_rows = tuned.history[:args.frozen_epochs], tuned.history[args.frozen_epochs:]
    train_seconds = sum(row["seconds"] for row in tuned.history)
    full_epoch_seconds = np.mean([row["seconds"] for row in unfrozen_rows])

    scratch_epochs = max(1, round(train_seconds / full_epoch_seconds))  # the same time budget
    scratch, scratch_seconds = timed(inceptorch.train, {
        **common, "data": str(npz), "image_size": args.size, "in_chans": 3, "epochs": scratch_epochs, "lr": 0.05,
        "name": "scratch"})

    results = {
        "model": MODEL, "image_size": args.size, "threads": args.threads,
        "data": {"train_photos": 800, "held_out_photos": 200, "npz_seconds": prep_seconds},
        "source": {"data": f"fashion-mnist, {args.source_samples} images, in_chans 3", "epochs": args.source_epochs,
                   "val_acc": source.metrics["val_acc"], "seconds": source_seconds},
        "finetuned": {"frozen_epochs": args.frozen_epochs, "unfrozen_epochs": args.unfrozen_epochs,
                      "train_seconds": train_seconds, "wall_seconds": tuned_seconds,
                      "val_acc_after_frozen_phase": frozen_rows[-1]["val_acc"],
                      "images_per_s_frozen": float(np.mean([r["images_per_s"] for r in frozen_rows])),
                      "images_per_s_full": float(np.mean([r["images_per_s"] for r in unfrozen_rows])),
                      "run_dir": str(tuned.run_dir), **report_of(tuned.run_dir, npz)},
        "scratch": {"epochs": scratch_epochs, "train_seconds": sum(row["seconds"] for row in scratch.history),
                    "wall_seconds": scratch_seconds, "images_per_s_full":
                        float(np.mean([r["images_per_s"] for r in scratch.history])),
                    "run_dir": str(scratch.run_dir), **report_of(scratch.run_dir, npz)},
    }
    tuned_r, scratch_r = results["finetuned"], results["scratch"]
    speedup = tuned_r["images_per_s_frozen"] / tuned_r["images_per_s_full"]
    print(f"\n{MODEL} at {args.size}x{args.size}, {args.threads} threads; held-out: 200 photos (100 a class)\n")
    print(f"{'run':<34}{'epochs':>7}{'train s':>9}{'held-out acc':>14}   per class P / R")
    for label, r, n in (("fine-tuned from Fashion-MNIST", tuned_r, epochs), ("from scratch, same time", scratch_r,
                                                                            scratch_epochs)):
        per_class = "  ".join(f"{c} {v['precision']:.2f}/{v['recall']:.2f}" for c, v in r["per_class"].items())
        print(f"{label:<34}{n:>7}{r['train_seconds']:>9.1f}{r['accuracy']:>14.3f}   {per_class}")
    print(f"\nafter the frozen phase alone: {tuned_r['val_acc_after_frozen_phase']:.3f} held-out accuracy")
    print(f"images/s: frozen backbone {tuned_r['images_per_s_frozen']:.0f}, full training "
          f"{tuned_r['images_per_s_full']:.0f} ({speedup:.1f}x)")
    print(f"source: Fashion-MNIST val acc {results['source']['val_acc']:.3f} in {source_seconds:.0f} s")
    print(f"confusion matrices: {tuned_r['confusion_png']}, {scratch_r['confusion_png']}")
    out = ROOT / "benchmarks" / "results" / "transfer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
