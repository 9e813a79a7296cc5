"""Peak memory and time of one training step with and without ``set_grad_checkpointing(True)``.

Each measurement is one fresh process (so that no allocator cache from an earlier step hides a
peak): it builds the model, then runs forward, cross-entropy and backward on one fixed batch, and
reports the rise of its peak resident memory over its memory just before the step, and the step's
seconds. Processes alternate between the two paths, ``--repeats`` rounds; the table gives medians
and ratios against the plain step, and the first loss of each path as the check that both compute
the same thing.

    python benchmarks/grad_checkpointing.py                        # inception_v3, batch 8 at 299x299
    python benchmarks/grad_checkpointing.py --model inception_resnet_v2 --batch 4 --repeats 3
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from inceptorch import create_model
from inceptorch.cpu import describe, machine
from inceptorch.tables import text_table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PATHS = ("plain", "checkpointed")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one_step(model_name: str, batch: int, size: int, checkpointed: bool) -> dict:
    """Runs in the child process: one training step, its memory rise and seconds."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=1000).train()
    model.set_grad_checkpointing(checkpointed)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    before, peak_before = _resident_bytes(), _peak_bytes()
    started = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = _peak_bytes()
    return {"rise_mib": (peak - before) / 2**20, "peak_set_by_step": peak > peak_before, "seconds": seconds,
            "loss": loss.item()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="inception_v3")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=3, help="processes per path (default 3)")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="output (default: benchmarks/results/grad_checkpointing.json)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_step(args.model, args.batch, args.size, args.child == "checkpointed")))
        return 0

    runs = {path: [] for path in PATHS}
    for round_ in range(args.repeats):
        for path in PATHS:  # interleaved: a slower machine for a while hits both paths
            command = [sys.executable, __file__, "--child", path, "--model", args.model, "--batch", str(args.batch),
                       "--size", str(args.size)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            if not result["peak_set_by_step"]:
                print(f"warning: round {round_ + 1}, {path}: building the model used more memory than the step",
                      file=sys.stderr)
            runs[path].append(result)
            print(f"round {round_ + 1} {path}: +{result['rise_mib']:.0f} MiB, {result['seconds']:.2f} s", flush=True)

    rise = {p: statistics.median(r["rise_mib"] for r in runs[p]) for p in PATHS}
    seconds = {p: statistics.median(r["seconds"] for r in runs[p]) for p in PATHS}
    rows = [[p, f"{rise[p]:.0f}", f"{rise[p] / rise['plain']:.2f}", f"{seconds[p]:.2f}",
             f"{seconds[p] / seconds['plain']:.2f}", f"{runs[p][0]['loss']:.6f}"] for p in PATHS]
    info = machine()
    table = text_table(["step", "peak rise MiB", "x plain", "seconds", "x plain", "loss"], rows)
    title = (f"{args.model}, batch {args.batch} at {args.size}x{args.size}, training step (forward + backward), "
             f"medians of {args.repeats} processes per path\n{describe(info)}")
    print(f"\n{title}\n{table}")
    out = Path(args.json) if args.json else RESULTS / "grad_checkpointing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "batch": args.batch, "size": args.size, "machine": info,
                               "median_rise_mib": rise, "median_seconds": seconds, "runs": runs}, indent=1))
    out.with_name(out.stem + "_table.txt").write_text(f"{title}\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
