"""Transfer learning on real photos: does a pretrained backbone beat training from scratch in the same time?

Without network there are no ImageNet weights, so the source models are trained here, googlenet_small
on two tasks: Fashion-MNIST (grey clothing repeated to RGB: another domain), and the cats and dogs
training photos at a quarter of the pixels (16x16: the same domain, cheaper). Each is fine-tuned on
the photos at 32x32, a first phase with the backbone frozen, a second with everything trained (the
freed layers at a lower learning rate), and compared with the same network trained from scratch for
the same wall-clock time. All are scored on the same held-out photos (every fifth photo of each
class), which no run trains on, with each run's last checkpoint.

The photos are decoded once (shorter side resized, center crop) into .npz files, so that the images/s
figures measure the network, not JPEG decoding.

    .venv/bin/python benchmarks/transfer.py [--data-root ../shared/data] [--threads 2]

Prints a table and writes benchmarks/results/transfer.json; the run folders (metrics, curves.png,
confusion.png, per_class.json, checkpoints) go to --work-dir.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

import inceptorch
from inceptorch.images import read_image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
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


def timed(function, options: dict):
    """Runs ``function(options)`` in a fresh run folder (an earlier run of this script's is replaced)."""
    shutil.rmtree(Path(options["out_dir"]) / options["name"], ignore_errors=True)
    start = time.perf_counter()
    result = function(options)
    return result, time.perf_counter() - start


def report_of(run_dir: Path, npz: Path) -> dict:
    """Accuracy, per-class precision/recall and confusion of the run's last checkpoint on the held-out photos;
    the run's confusion.png is copied beside the JSON results."""
    result = inceptorch.evaluate(run_dir / "last.safetensors", str(npz), workers=0)
    image = RESULTS / f"transfer-confusion-{run_dir.name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "confusion.png", image)
    return {"accuracy": result.accuracy, "per_class": result.per_class, "confusion": result.confusion,
            "confusion_png": str(image.relative_to(ROOT))}


def finetune_from(source_weights: Path, npz: Path, args, common: dict, name: str) -> dict:
    """Phase 1 heads only, phase 2 everything (freed layers at a lower rate); scored on the held-out photos."""
    epochs = args.frozen_epochs + args.unfrozen_epochs
    run, wall = timed(inceptorch.finetune, {
        **common, "data": str(npz), "weights": str(source_weights), "image_size": args.size, "freeze": "backbone",
        "unfreeze_after": args.frozen_epochs, "epochs": epochs, "lr": 0.05, "lr_unfrozen": 0.02, "name": name})
    frozen, full = run.history[:args.frozen_epochs], run.history[args.frozen_epochs:]
    return {"epochs": epochs, "train_seconds": sum(r["seconds"] for r in run.history), "wall_seconds": wall,
            "held_out_acc_after_frozen_phase": frozen[-1]["val_acc"],
            "images_per_s_frozen": float(np.mean([r["images_per_s"] for r in frozen])),
            "images_per_s_full": float(np.mean([r["images_per_s"] for r in full])),
            "full_epoch_seconds": float(np.mean([r["seconds"] for r in full])),
            "run_dir": str(run.run_dir), **report_of(run.run_dir, npz)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("INCEPTORCH_DATA", str(ROOT.parent / "shared/data")))
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "transfer-benchmark"))
    parser.add_argument("--size", type=int, default=32, help="side of the photos given to the network")
    parser.add_argument("--low-size", type=int, default=16, help="side of the photos for the low-resolution source")
    parser.add_argument("--source-samples", type=int, default=6000, help="Fashion-MNIST images for that source")
    parser.add_argument("--source-epochs", type=int, default=2, help="epochs of the Fashion-MNIST source")
    parser.add_argument("--low-epochs", type=int, default=8, help="epochs of the low-resolution source")
    parser.add_argument("--frozen-epochs", type=int, default=3, help="fine-tuning phase 1: heads only")
    parser.add_argument("--unfrozen-epochs", type=int, default=6, help="fine-tuning phase 2: everything")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    photos = Path(args.data_root) / "cats_vs_dogs" / "train"
    common = {"model": MODEL, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
              "augment": "flip,crop", "out_dir": str(work), "quiet": True, "workers": 0, "seed": 0}
    npz = photos_to_npz(photos, args.size, work / f"cats_vs_dogs_{args.size}.npz")
    low_npz = photos_to_npz(photos, args.low_size, work / f"cats_vs_dogs_{args.low_size}.npz")

    # Two sources: another task (grey clothing), and the same photos at a quarter of the pixels.
    fashion, fashion_seconds = timed(inceptorch.train, {
        **common, "data": "fashion-mnist", "data_root": args.data_root, "in_chans": 3, "epochs": args.source_epochs,
        "lr": 0.1, "train_samples": args.source_samples, "val_samples": 2000, "name": "source-fashion-mnist"})
    low, low_seconds = timed(inceptorch.train, {
        **common, "data": str(low_npz), "image_size": args.low_size, "epochs": args.low_epochs, "lr": 0.05,
        "name": f"source-photos-{args.low_size}px"})
    sources = {"fashion-mnist": {"what": f"Fashion-MNIST, {args.source_samples} images at 28x28, grey as RGB",
                                 "epochs": args.source_epochs, "val_acc": fashion.metrics["val_acc"],
                                 "seconds": fashion_seconds},
               "low-resolution photos": {"what": f"the 800 training photos at {args.low_size}x{args.low_size}",
                                         "epochs": args.low_epochs, "seconds": low_seconds}}
    tuned = {"fashion-mnist": finetune_from(fashion.run_dir / "last.safetensors", npz, args, common,
                                            "finetuned-from-fashion-mnist"),
             "low-resolution photos": finetune_from(low.run_dir / "last.safetensors", npz, args, common,
                                                    f"finetuned-from-{args.low_size}px")}

    budget = float(np.mean([t["train_seconds"] for t in tuned.values()]))
    full_epoch = float(np.mean([t["full_epoch_seconds"] for t in tuned.values()]))
    scratch_epochs = max(1, round(budget / full_epoch))  # the same time as a fine-tuning run
    scratch, scratch_wall = timed(inceptorch.train, {
        **common, "data": str(npz), "image_size": args.size, "epochs": scratch_epochs, "lr": 0.05, "name": "scratch"})
    scratch_result = {"epochs": scratch_epochs, "train_seconds": sum(r["seconds"] for r in scratch.history),
                      "wall_seconds": scratch_wall,
                      "images_per_s_full": float(np.mean([r["images_per_s"] for r in scratch.history])),
                      "run_dir": str(scratch.run_dir), **report_of(scratch.run_dir, npz)}

    results = {"model": MODEL, "image_size": args.size, "threads": args.threads,
               "photos": {"train": 800, "held_out": 200, "held_out_rule": "every fifth photo of each class"},
               "sources": sources, "finetuned": tuned, "scratch": scratch_result}
    print(f"\n{MODEL} at {args.size}x{args.size}, {args.threads} thread(s); held out: 200 photos (100 a class), "
          "last checkpoint of each run\n")
    print(f"{'start':<36}{'epochs':>7}{'train s':>9}{'acc':>7}{'acc, heads only':>17}{'img/s heads/full':>18}"
          "   per class precision/recall")
    rows = [("from scratch, same time", scratch_result)] + [(f"fine-tuned from {k}", v) for k, v in tuned.items()]
    for label, r in rows:
        per_class = "  ".join(f"{c} {v['precision']:.2f}/{v['recall']:.2f}" for c, v in r["per_class"].items())
        heads_only = f"{r['held_out_acc_after_frozen_phase']:.3f}" if "images_per_s_frozen" in r else "-"
        speeds = (f"{r['images_per_s_frozen']:.0f}/{r['images_per_s_full']:.0f}" if "images_per_s_frozen" in r
                  else f"-/{r['images_per_s_full']:.0f}")
        print(f"{label:<36}{r['epochs']:>7}{r['train_seconds']:>9.1f}{r['accuracy']:>7.3f}{heads_only:>17}"
              f"{speeds:>18}   {per_class}")
    for name, source in sources.items():
        acc = f", val acc {source['val_acc']:.3f}" if "val_acc" in source else ""
        print(f"source {name}: {source['what']}, {source['epochs']} epochs, {source['seconds']:.0f} s{acc}")
    print("confusion matrices: " + ", ".join(r["confusion_png"] for _, r in rows))
    out = RESULTS / "transfer.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
