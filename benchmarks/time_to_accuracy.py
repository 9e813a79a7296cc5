"""Time to accuracy of a training recipe, against the d2l book's GoogLeNet recipe on the same machine.

Runs ``--recipe`` on a local data root with 10,000 of the training images held out for validation,
then prints and writes (JSON) each epoch's wall time, training images/s and validation accuracy, and
when each accuracy threshold was first reached. In the same run it times a few training steps of the
d2l recipe (``fashion-mnist-d2l``: 96x96 inputs, batch 128) and extrapolates them to that recipe's
10 epochs of 60,000 images, the baseline of the "N times shorter" figure.

    python benchmarks/time_to_accuracy.py --recipe fashion-mnist-fast [--data-root ../shared/data]

The wall time of an epoch counts from the start of the script's training call (data loading, model
building and any compilation included) to the end of that epoch's validation; as the run folder's
checkpoints between epochs are timed only as a whole, each epoch's time is an upper bound by at most
the later epochs' checkpoint writes.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from inceptorch import data as datasets
from inceptorch import sources
from inceptorch.config import resolve
from inceptorch.cpu import describe, machine
from inceptorch.devices import pick_device
from inceptorch.ensemble import train_ensemble
from inceptorch.training import build_model, train
from inceptorch.training.steps import autocast_dtype, make_optimizer, training_loss

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
HELD_OUT = 10_000
D2L_RECIPE, D2L_TRAIN_IMAGES = "fashion-mnist-d2l", 60_000
THRESHOLDS = {"fashion-mnist": (0.886, 0.90, 0.92, 0.935, 0.945, 0.95), "mnist": (0.99, 0.995, 0.996)}


def d2l_images_per_s(data_root: str, device: str, steps: int, warmup: int = 1) -> dict:
    """Training images/s of the d2l recipe, timed over ``steps`` steps on real batches (resizing
    included) after ``warmup`` untimed ones."""
    config = resolve({"recipe": D2L_RECIPE, "data_root": data_root, "device": device,
                      "train_samples": (steps + warmup) * 128})
    device = pick_device(config.device)
    source = sources.open_source(config)
    model = build_model(config, source.classes, source.channels)
    prep = datasets.preprocessing(source, model, config)
    batches = datasets.loaders(source, prep, config, device=device)["train"]
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    seconds = 0.0
    for step, (x, y) in enumerate(batches):
        started = time.perf_counter()
        loss = training_loss(model(x), [], y, 0.0, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            seconds += time.perf_counter() - started
    rate = steps * config.batch_size / seconds
    return {"recipe": D2L_RECIPE, "model": config.model, "image_size": prep.crop,
            "batch_size": config.batch_size, "timed_steps": steps, "images_per_s": rate,
            "epochs": config.epochs, "images_per_epoch": D2L_TRAIN_IMAGES,
            "extrapolated_s": config.epochs * D2L_TRAIN_IMAGES / rate}


def epoch_wall_times(history: list[dict], total_s: float) -> list[float]:
    """Seconds from the start to the end of each epoch: the total less the later epochs' own time."""
    later = [sum(row["seconds"] for row in history[i + 1:]) for i in range(len(history))]
    return [total_s - rest for rest in later]


def first_reached(history: list[dict], walls: list[float], thresholds) -> dict:
    reached = {}
    for threshold in thresholds:
        hit = next((i for i, row in enumerate(history)
                    if row["val_acc"] is not None and row["val_acc"] >= threshold), None)  # see --val-every
        reached[f"{threshold:g}"] = None if hit is None else {"epoch": hit + 1, "wall_s": walls[hit]}
    return reached


def precision(config, device: torch.device) -> str:
    """What the run computes in: bfloat16 or float16 autocast (float32 weights), or float32."""
    dtype = autocast_dtype(config, device)
    chosen = " (amp: auto)" if config.amp == "auto" else ""
    return (f"{str(dtype).removeprefix('torch.')} autocast" if dtype else "float32") + chosen


def report(result: dict) -> str:
    run, d2l = result["run"], result.get("d2l")
    where = result["machine"]
    title = (f"time to accuracy: recipe {result['recipe']} ({run['model']} on {run['data']}, "
             f"{run['train_images']} training / {run['val_images']} validation images, {where['device']}, "
             f"{where['threads']} threads, load average {where['load_average']:.1f} at the start)")
    title += (f"\n{describe(where)}; precision {run['precision']}, compile {run['compile']}, "
              f"batch {result['config']['batch_size']}, channels-last {result['config']['channels_last']}, "
              f"seed {result['config']['seed']}")
    smaller, early = result["config"].get("progressive_size"), result["config"].get("progressive_epochs")
    if early:
        title += f"; progressive resizing: epochs 1-{early} at {smaller}x{smaller}"
    lines = [title, "", f"{'epoch':>5}  {'wall s':>7}  {'img/s':>6}  {'val acc':>7}"]
    for row in result["epochs"]:
        val_acc = "-" if row["val_acc"] is None else f"{row['val_acc']:.4f}"  # an epoch --val-every skipped
        lines.append(f"{row['epoch']:>5}  {row['wall_s']:7.1f}  {row['images_per_s']:6.0f}  {val_acc:>7}")
    ratio_column = "  d2l time / this" if d2l else ""
    lines += ["", f"{'threshold':>9}  {'reached at':>10}  {'epoch':>5}{ratio_column}"]
    for threshold, hit in result["thresholds"].items():
        if hit is None:
            lines.append(f"{threshold:>9}  {'not reached':>10}")
            continue
        ratio = f"  {d2l['extrapolated_s'] / hit['wall_s']:15.1f}x" if d2l else ""
        lines.append(f"{threshold:>9}  {hit['wall_s']:9.1f}s  {hit['epoch']:>5}{ratio}")
    lines.append(f"\ntotal wall time {result['wall_s']:.1f} s, best val acc {result['best_val_acc']:.4f}")
    if result.get("ensemble"):
        members = result["ensemble"]
        each = ", ".join(f"{acc:.4f}" for acc in members["member_val_acc"])
        lines.append(f"ensemble of {members['members']} (seeds from {result['config']['seed']}, "
                     f"{members['threads_each']} thread(s) each; the epochs above are the first member's): "
                     f"each alone {each}, their mean probabilities {result['best_val_acc']:.4f}")
    if d2l:
        lines.append(f"d2l recipe ({d2l['model']}, {d2l['image_size']}x{d2l['image_size']}, batch "
                     f"{d2l['batch_size']}): {d2l['images_per_s']:.1f} img/s over {d2l['timed_steps']} "
                     f"steps -> {d2l['epochs']} epochs of {d2l['images_per_epoch']} images = "
                     f"{d2l['extrapolated_s']:.0f} s ({d2l['extrapolated_s'] / 3600:.1f} h)")
        if result.get("speedup_at_0.886"):
            lines.append(f"time to the d2l recipe's 0.886: {result['speedup_at_0.886']:.1f}x shorter than "
                         "its 10 epochs")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-mnist-fast", help="a shipped recipe name or a YAML file")
    parser.add_argument("--data-root", default=os.environ.get("INCEPTORCH_DATA", str(DEFAULT_DATA)),
                        help="folder with MNIST/ and FashionMNIST/ (default: $INCEPTORCH_DATA, else "
                             "../shared/data beside the project)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (quick checks)")
    parser.add_argument("--train-samples", type=int, help="train on the first N images only (quick checks)")
    parser.add_argument("--seed", type=int, help="override the recipe's seed (weights, order, augmentation)")
    parser.add_argument("--thresholds", help="comma-separated accuracies (default: by data set)")
    parser.add_argument("--d2l-steps", type=int, default=3, help="timed steps of the d2l recipe (0: skip it)")
    parser.add_argument("--out-dir", default=str(ROOT / "runs"), help="where the run folder goes")
    parser.add_argument("--json", metavar="FILE",
                        help="output file (default: benchmarks/results/time_to_accuracy_RECIPE.json)")
    args = parser.parse_args(argv)

    options = {"recipe": args.recipe, "data_root": args.data_root, "val_split": HELD_OUT,
               "device": args.device, "out_dir": args.out_dir}
    options.update({k: v for k, v in (("epochs", args.epochs), ("train_samples", args.train_samples),
                                      ("seed", args.seed)) if v is not None})
    config = resolve(options)
    thresholds = ([float(t) for t in args.thresholds.split(",")] if args.thresholds
                  else THRESHOLDS.get(config.data, THRESHOLDS["fashion-mnist"]))
    device = pick_device(config.device)
    where = machine(device)  # before the run, whose own load would count in the load average
    sizes = {name: len(split) for name, split in sources.open_source(config).splits.items()}

    d2l = d2l_images_per_s(args.data_root, args.device, args.d2l_steps) if args.d2l_steps else None
    if d2l:
        print(f"d2l recipe: {d2l['images_per_s']:.1f} img/s ({d2l['extrapolated_s'] / 3600:.1f} h for its "
              f"{d2l['epochs']} epochs)", flush=True)

    started = time.perf_counter()
    ensemble = train_ensemble(config) if config.ensemble > 1 else None
    trained = ensemble.members[0] if ensemble else train(config)
    total = time.perf_counter() - started
    history = trained.history  # an ensemble's first member's
    walls = epoch_wall_times(history, total)
    scored = history if not ensemble else [*history[:-1], {**history[-1], "val_acc": ensemble.val_acc}]
    result = {
        "recipe": args.recipe, "machine": where, "config": config.to_dict(),
        "run": {"model": config.model, "data": config.data, "run_dir": str(trained.run_dir),
                "train_images": sizes["train"], "val_images": sizes["val"],
                "precision": precision(config, device), "compile": config.compile},
        "wall_s": total, "best_val_acc": ensemble.val_acc if ensemble else trained.best_val_acc,
        "ensemble": ensemble and {"members": len(ensemble.members), "threads_each": ensemble.threads,
                                  "member_val_acc": [m.metrics["val_acc"] for m in ensemble.members]},
        "epochs": [{"epoch": row["epoch"], "wall_s": wall, "images_per_s": row["images_per_s"],
                    "val_acc": row["val_acc"], "train_loss": row["train_loss"], "epoch_s": row["seconds"]}
                   for row, wall in zip(history, walls)],
        "thresholds": first_reached(scored, walls, thresholds),
        "d2l": d2l,
    }
    hit = first_reached(scored, walls, [0.886])["0.886"] if config.data == "fashion-mnist" else None
    result["speedup_at_0.886"] = d2l["extrapolated_s"] / hit["wall_s"] if d2l and hit else None  # the book's figure
    out = Path(args.json or RESULTS / f"time_to_accuracy_{Path(args.recipe).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    text = report(result)
    out.with_name(out.stem + "_table.txt").write_text(text + "\n")
    print(f"\n{text}\n\nwritten: {out} and its _table.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
