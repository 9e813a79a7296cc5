"""FID on the CPU: pytorch-fid, torch-fidelity and inceptorch's modes and approximate paths, interleaved.

Two pairs of real image sets: --images CIFAR-10 training JPEGs against the next --images (2,000 each
by default), and the cat photos against the dog photos (at most 500 each; mixed sizes, so pytorch-fid
and torch-fidelity run at batch size 1, the only size they take them at). Each round runs every path
once on each pair, in turn (interleaved), statistics caches off; the table gives medians of
--repeats rounds: wall time, images/s, the speed-up over pytorch-fid, and the FID with its relative
deviation from pytorch-fid's (the exact modes) or from inceptorch's exact mode (the approximate paths).

The real weights file cannot be fetched on machines without internet: by default a random-weight
FID Inception (``randomize_``-style, activations near unit scale) is planted in a temporary
TORCH_HOME under both libraries' file names, so every tool computes with the same weights (speed
does not depend on them; the FIDs are those of random features). --torch-home uses a cache that
holds the real file instead.

Targets (issue 39): inceptorch's exact pytorch-fid mode >= 1.5x pytorch-fid's speed with the same
FID (relative 1e-5); the fastest approximate path >= 5x, its deviation printed beside it.

    PYTHONPATH=. python benchmarks/fid.py [--images 2000] [--repeats 3] [--pairs cifar10 cats_vs_dogs]
        [--paths ...] [--data-root ../shared/data] [--torch-home DIR]

Prints the table and writes benchmarks/results/fid.json (--tag adds a suffix).
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # randomize_, the project's random weights for reference checks

from inception_reference import randomize_

from inceptorch import metrics
from inceptorch.cpu import describe, machine
from inceptorch.inference import bf16_supported

EXACT = ("inceptorch pytorch-fid", "inceptorch torch-fidelity", "inceptorch clean")
APPROXIMATE = {"inceptorch bf16": ("torch", "bf16"), "inceptorch int8": ("torch", "int8"),
               "inceptorch openvino": ("openvino", "fp32"), "inceptorch openvino int8": ("openvino", "int8")}
REFERENCES = ("pytorch-fid", "torch-fidelity")
# Whose FID each path's deviation is measured from: each exact mode's own tool (clean-fid's own network,
# NVIDIA's TorchScript of the same graph, cannot be fetched offline: clean has none), approximate paths
# from the exact mode.
AGAINST = {"inceptorch torch-fidelity": "torch-fidelity", "inceptorch clean": None,
           **{path: "inceptorch pytorch-fid" for path in APPROXIMATE}}
TARGETS = {"exact": 1.5, "approximate": 5.0, "same_fid": 1e-5}


def plant_random_weights(home: Path) -> None:
    import torchvision

    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2015)
    model = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    torch.save(randomize_(model).state_dict(), checkpoints / "pt_inception-2015-12-05-6726825d.pth")
    (checkpoints / "weights-inception-2015-12-05-6726825d.pth").symlink_to(
        checkpoints / "pt_inception-2015-12-05-6726825d.pth")


def linked_folder(folder: Path, files: list[Path]) -> str:
    """The reference tools read a folder's top level: the files, linked into one."""
    folder.mkdir(parents=True)
    for i, file in enumerate(files):
        (folder / f"{i:05d}_{file.name}").symlink_to(file.resolve())
    return str(folder)


def image_pairs(root: Path, count: int, names: list[str], work: Path) -> dict:
    pairs = {}  # in the order of ``names``
    for name in names:
        pairs.update(_pair(root, count, name, work))
    return pairs


def _pair(root: Path, count: int, name: str, work: Path) -> dict:
    pairs = {}
    if name == "cifar10":
        files = sorted((root / "cifar10" / "train").glob("*/*.jpg"))
        files = files[::max(1, len(files) // (2 * count))][:2 * count]  # every class, spread evenly
        pairs["cifar10"] = (linked_folder(work / "cifar_a", files[0::2]), linked_folder(work / "cifar_b", files[1::2]),
                            True)
    if name == "cats_vs_dogs":
        photos = root / "cats_vs_dogs" / "train"
        side = min(count, 500)
        pairs["cats_vs_dogs"] = (linked_folder(work / "cats", sorted((photos / "cat").glob("*.jpg"))[:side]),
                                 linked_folder(work / "dogs", sorted((photos / "dog").glob("*.jpg"))[:side]), False)
    return pairs


def run_path(path: str, a: str, b: str, same_size: bool) -> float:
    """One FID by one path, statistics caches off; returns the FID."""
    if path == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_fid_given_paths

        return float(calculate_fid_given_paths([a, b], 50 if same_size else 1, "cpu", 2048, num_workers=0))
    if path == "torch-fidelity":
        from torch_fidelity import calculate_metrics

        return calculate_metrics(input1=a, input2=b, fid=True, cuda=False, cache=False, verbose=False,
                                 batch_size=64 if same_size else 1)["frechet_inception_distance"]
    options = {"cache": False, "progress": False}
    if path in APPROXIMATE:
        options["backend"], options["precision"] = APPROXIMATE[path]
    else:
        options["mode"] = path.split()[1]
    return metrics.fid(a, b, **options)


def available_paths(requested: list[str] | None) -> list[str]:
    paths = list(REFERENCES + EXACT) + ["inceptorch int8", "inceptorch openvino", "inceptorch openvino int8"]
    if bf16_supported():
        paths.insert(len(REFERENCES) + len(EXACT), "inceptorch bf16")
    return [p for p in paths if requested is None or p in requested]


def target_lines(rows: list[dict]) -> list[str]:
    """Whether each pair meets the issue's targets, as far as the paths measured can say."""
    lines = []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        by_path = {r["path"]: r for r in rows if r["pair"] == pair and r["speedup"] is not None}
        exact = by_path.get("inceptorch pytorch-fid")
        if exact is not None:
            met = exact["speedup"] >= TARGETS["exact"] and (exact["deviation"] or 0) <= TARGETS["same_fid"]
            lines.append(f"target {pair}: exact mode {exact['speedup']:.2f}x (>= {TARGETS['exact']}x, FID within "
                         f"{TARGETS['same_fid']:g}): {'met' if met else 'NOT met'}")
        fastest = max((r for p, r in by_path.items() if p in APPROXIMATE), key=lambda r: r["speedup"], default=None)
        if fastest is not None:
            met = fastest["speedup"] >= TARGETS["approximate"]
            deviation = "not measured" if fastest["deviation"] is None else f"{fastest['deviation']:.1e}"
            lines.append(f"target {pair}: fastest approximate path {fastest['path']} {fastest['speedup']:.2f}x "
                         f"(>= {TARGETS['approximate']}x), deviation {deviation}: "
                         f"{'met' if met else 'NOT met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="CIFAR-10 images a side (cats and dogs: up to 500)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", nargs="+", default=["cifar10", "cats_vs_dogs"])
    parser.add_argument("--paths", nargs="+", help="a subset of the paths (default: all this CPU runs)")
    parser.add_argument("--data-root", default=os.environ.get("INCEPTORCH_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--torch-home", help="a TORCH_HOME holding the real weights (default: random ones)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    info = machine()
    load_before = os.getloadavg()  # the machine may be shared: the load says how far to trust the seconds
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.torch_home:
            os.environ["TORCH_HOME"] = args.torch_home
        else:
            os.environ["TORCH_HOME"] = str(work / "torch_home")
            plant_random_weights(work / "torch_home")
        pairs = image_pairs(Path(args.data_root), args.images, args.pairs, work)
        paths = available_paths(args.paths)
        times = {(p, n): [] for p in paths for n in pairs}
        values = {}
        for round_ in range(args.repeats):
            for name, (a, b, same_size) in pairs.items():
                for path in paths:
                    start = time.perf_counter()
                    values[path, name] = run_path(path, a, b, same_size)
                    times[path, name].append(time.perf_counter() - start)
                    print(f"round {round_ + 1} {name:<13} {path:<26} {times[path, name][-1]:8.1f} s  "
                          f"FID {values[path, name]:.6g}  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        counts = {name: len(os.listdir(a)) + len(os.listdir(b)) for name, (a, b, _) in pairs.items()}
    rows = []
    for name in pairs:
        base_time = statistics.median(times["pytorch-fid", name]) if "pytorch-fid" in paths else None
        for path in paths:
            seconds = statistics.median(times[path, name])
            against = AGAINST.get(path, "pytorch-fid")
            deviation = (abs(values[path, name] - values[against, name]) / abs(values[against, name])
                         if against in paths and path != against else None)
            rows.append({"pair": name, "path": path, "seconds": seconds, "images_per_s": counts[name] / seconds,
                         "speedup": base_time / seconds if base_time else None, "fid": values[path, name],
                         "deviation": deviation, "deviation_from": against if deviation is not None else None})
    load_after = os.getloadavg()
    title = (f"FID, {describe(info)}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved rounds, "
             f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    header = (f"{'pair':<13} {'path':<26} {'seconds':>9} {'images/s':>9} {'vs pytorch-fid':>15} {'FID':>12} "
              f"{'deviation':>10}")
    table = [title, header]
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        deviation = f"{r['deviation']:.1e}" if r["deviation"] is not None else "-"
        table.append(f"{r['pair']:<13} {r['path']:<26} {r['seconds']:9.1f} {r['images_per_s']:9.1f} {speedup:>15} "
                     f"{r['fid']:12.6g} {deviation:>10}")
    table.append("deviation: relative, from the FID of the mode's own tool (exact modes) or of inceptorch's exact "
                 "mode (approximate paths)")
    table += target_lines(rows)
    print("\n".join(table))
    out = ROOT / "benchmarks" / "results" / f"fid{args.tag}.json"
    out.write_text(json.dumps({"machine": info, "images": args.images, "counts": counts, "repeats": args.repeats,
                               "paths": paths, "load_average_before": load_before, "load_average_after": load_after,
                               "weights": "real" if args.torch_home else "random (randomize_)",
                               "targets": TARGETS, "rows": rows}, indent=2) + "\n")
    out.with_name(f"fid{args.tag}_table.txt").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
