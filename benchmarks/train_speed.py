"""Training images/s of googlenet_small on Fashion-MNIST shapes, one row per technique, paths interleaved.

Each path is one whole training step (forward, cross-entropy with label smoothing, backward, SGD with
Nesterov momentum) on a fixed 1x28x28 batch (1x24x24 and 1x20x20 in the rows of progressive resizing's
first epochs, ``--progressive-size``), built once and then timed in rounds that visit every
path in turn (``inceptorch.inference.bench.time_interleaved``: medians over rounds). Ratios are
against the first path, float32 in channels-last format at batch 128, the previous recipes' setting;
torch.compile starts from an empty cache, so its compile time is a first run's.
Thread counts, OpenMP thread binding and memory allocators (jemalloc, tcmalloc) are fixed when a
process starts: those rows come from child processes started in turn with the environment variable
set (``OMP_NUM_THREADS``, ``OMP_PROC_BIND``, ``LD_PRELOAD``), each timing the recipes' precision (what
``amp: auto`` picks on this CPU: bf16 autocast with AVX512-BF16 or AMX, fp32 elsewhere), medians over
rounds, with ratios against the default child; the batch-size, fused BN-ReLU and compile rows use
that precision too. "Fused BN-ReLU" is each batch normalization and its ReLU compiled into one
kernel by torch.compile, the convolutions left to oneDNN: the fusion alone, without compiling the
whole step.

    python benchmarks/train_speed.py [--width 0.375] [--repeats 5] [--no-compile] [--process-rounds 3]

What paid on a 2-core Xeon with AMX (benchmarks/results/train_speed_table.txt): bf16 autocast, 1.33x
at batch 128 and 1.37x at batch 256 (batch 512: 1.18x). What did not: torch.compile of the step took
284 s to compile and ran at 0.54x of the eager bf16 step (one run on heavily shared cores);
jemalloc and tcmalloc were no faster than glibc's malloc. The batch pipeline costs under 1 %.
Progressive resizing's inputs (train_speed_progressive_amx_table.txt, bf16, batch 256, the same Xeon):
24x24 1.28x and 20x20 1.69x the images/s of 28x28, which is what makes room for fashion-mnist-best's
15 epochs, the first 6 at 20x20, in the time of 12 at 28x28.
On a 2-core AMD EPYC with AVX2 only (benchmarks/results/train_speed_avx2_table.txt) bf16 autocast is
emulated and runs at 0.15x of fp32, which is why ``amp: auto`` stays in fp32 there; batch 256 gave
1.15x; torch.compile of the fp32 step took 125 s and ran at 0.80x of eager; BN-ReLU fused by
torch.compile at 0.59x (89 s to compile, one region per activation shape); one thread per process
0.63x of two; threads bound to cores 1.03x and tcmalloc 1.05x, within these runs' noise; jemalloc
0.64x. On a 2-core AMD EPYC with AVX512-BF16 (benchmarks/results/train_speed_avx512bf16_table.txt):
bf16 autocast 1.23x at batch 128 and 1.43x at batch 256 (batch 512: 1.15x); torch.compile of the
bf16 step 0.90x after 92 s of compiling, the fused BN-ReLU 0.64x (67 s); one thread 0.74x of two,
threads bound to cores 1.08x. At mnist-fast's width 0.25 there
(benchmarks/results/train_speed_width025_avx512bf16_table.txt): one thread 0.68x of two, and two
one-thread processes at once, an ensemble's members, 1.34x between them.

Where the step's time goes at width 0.25 (torch.profiler, batch 256, one thread, bf16, Xeon with AMX,
814 images/s): the max pools' forward and backward 26 %, the convolutions 22 %, batch normalization
16 %, ReLU's backward 15 %, summing gradients 9 %. The channel slices of the gradient that a block's
concatenation hands each branch are strided, and bf16 ReLU backward on them takes 18 times as long as
on a contiguous copy (4.3 against 0.24 ms at 256x16x14x14); copying them contiguous first lifted the
step by only 5 % (783 to 822 images/s), left out. torch.compile of a max pool alone ran its forward
and backward at 0.5x eager's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from inceptorch import create_model
from inceptorch.config import TrainConfig
from inceptorch.cpu import describe, machine
from inceptorch.data import augment_batch, shape_batch
from inceptorch.images import Preprocessing
from inceptorch.inference.bench import time_interleaved
from inceptorch.models.layers import ConvBNAct
from inceptorch.tables import text_table
from inceptorch.training.steps import autocast_dtype, make_optimizer, training_loss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ALLOCATORS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
PREP = Preprocessing(28, 28, (0.286,), (0.353,))  # Fashion-MNIST's mean and std


def batch_norm_relu(bn: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch normalization and ReLU as one function, for torch.compile to fuse."""
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, bn.momentum, bn.eps))


def fuse_bn_relu(model: torch.nn.Module) -> None:
    """Runs each ConvBNAct's BN and ReLU as one compiled kernel after its (eager, oneDNN) convolution."""
    fused = torch.compile(batch_norm_relu, dynamic=False)
    torch._dynamo.config.cache_size_limit = 64  # one compiled kernel per activation shape
    for unit in model.modules():
        if isinstance(unit, ConvBNAct):
            unit.forward = lambda x, unit=unit: fused(unit.bn, unit.conv(x))


def training_step(width: float, batch: int, bf16: bool, compiled: str | None, lr: float = 0.1, side: int = 28):
    """A function of nothing running one training step on side x side inputs, and the seconds its first
    call took (with ``compiled``, "step" or "bn-relu", the compilation of forward and backward)."""
    torch.manual_seed(0)
    model = create_model("googlenet_small", num_classes=10, in_chans=1, width=width)
    if compiled == "bn-relu":
        fuse_bn_relu(model)
    model.to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, TrainConfig(lr=lr, nesterov=True))
    forward = torch.compile(model) if compiled == "step" else model
    x = torch.randn(batch, 1, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = training_loss(forward(x), [], y, 0.0, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # the training loop reads the loss every step

    started = time.perf_counter()
    step()
    return step, time.perf_counter() - started


def batch_pipeline(batch: int):
    """The in-memory batch pipeline of the recipes: uint8 -> normalized float, random flips and crops."""
    images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    return lambda: augment_batch(shape_batch(images, PREP), ("flip", "crop"), generator)


def paths(width: float, compile: bool) -> list[dict]:
    """The techniques timed in this process: (name, batch, the step function, setup seconds)."""
    recipe_bf16, precision = recipe_precision()
    rows = [("fp32 channels-last (reference)", 128, False, None, 28),
            ("bf16 autocast", 128, True, None, 28),
            (f"{precision}, batch 256 (lr x2)", 256, recipe_bf16, None, 28),
            (f"{precision}, batch 512 (lr x4)", 512, recipe_bf16, None, 28),
            (f"{precision}, batch 256, 24x24 (progressive resizing)", 256, recipe_bf16, None, 24),
            (f"{precision}, batch 256, 20x20 (progressive resizing)", 256, recipe_bf16, None, 20)]
    if compile:
        rows += [(f"{precision}, BN-ReLU fused (torch.compile)", 128, recipe_bf16, "bn-relu", 28),
                 (f"{precision} + torch.compile", 128, recipe_bf16, "step", 28)]
    built = []
    for name, batch, bf16, compiled, side in rows:
        print(f"building: {name}", flush=True)
        step, first_s = training_step(width, batch, bf16, compiled, lr=0.1 * batch / 128, side=side)
        built.append({"path": name, "batch": batch, "call": step, "setup_s": first_s if compiled else 0.0})
    built.append({"path": "batch pipeline only (shape, flip, crop)", "batch": 128, "call": batch_pipeline(128),
                  "setup_s": 0.0})
    return built


def recipe_precision() -> tuple[bool, str]:
    """Whether the recipes' ``amp: auto`` trains in bf16 on this CPU (the engine's own rule: where
    bf16 is native, AVX512-BF16 or AMX), and that precision's name for the rows."""
    bf16 = autocast_dtype(TrainConfig(amp="auto"), torch.device("cpu")) is not None
    return bf16, "bf16 autocast" if bf16 else "fp32"


def find_library(name: str) -> str | None:
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).is_file()), None)


def process_settings() -> dict[str, list[dict]]:
    """The environments of the child processes started at once, by row name: the default first, then
    one thread, two one-thread processes side by side (an ensemble's two members, their images/s
    summed), OpenMP threads bound to cores, and each memory allocator found."""
    one_thread = {"OMP_NUM_THREADS": "1"}
    settings = {"default (glibc malloc, threads unbound)": [{}],
                "1 thread (OMP_NUM_THREADS=1)": [one_thread],
                "2 processes of 1 thread at once, summed": [one_thread, one_thread],
                "threads bound to cores (OMP_PROC_BIND=close)": [{"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}]}
    for name, library in ALLOCATORS.items():
        path = find_library(library)
        if path:
            settings[name] = [{"LD_PRELOAD": path}]
        else:
            print(f"{name}: {library} not found (apt-get install {'libjemalloc2' if name == 'jemalloc' else 'libtcmalloc-minimal4'})")
    return settings


def child_rates(width: float, environments: list[dict]) -> float:
    """The summed images/s of one child process per environment, all started at once."""
    children = [subprocess.Popen([sys.executable, __file__, "--child", "--width", str(width)],
                                 env={**os.environ, **variables}, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                for variables in environments]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise RuntimeError(f"a child process failed (exit {[c.returncode for c in children]}): see its error above")
    return sum(float(out.strip().splitlines()[-1]) for out in outputs)


def process_rows(width: float, rounds: int) -> list[dict]:
    """The recipes' step in child processes per (round, setting), settings visited in turn."""
    settings = process_settings()
    samples = {name: [] for name in settings}
    for _ in range(rounds):
        for name, environments in settings.items():
            samples[name].append(child_rates(width, environments))
    precision = recipe_precision()[1]
    rates = {name: statistics.median(runs) for name, runs in samples.items()}
    default = next(iter(rates.values()))
    return [{"path": f"{precision}, {name}", "batch": 128, "images_per_s": rate, "vs_reference": rate / default,
             "setup_s": 0.0} for name, rate in rates.items()]


def child_rate(width: float) -> float:
    """Images/s of the recipes' step in this process (its threads and allocator as its environment set them)."""
    step, _ = training_step(width, 128, recipe_precision()[0], None)
    seconds = time_interleaved({"step": step}, repeats=3, min_round_s=2.0)["step"]
    return 128 / seconds


def in_process_rows(width: float, compile: bool, repeats: int) -> list[dict]:
    """The techniques of ``paths``, timed interleaved; torch.compile's cache is a new, empty folder
    removed afterwards, so that its compile time is a first run's, not a cached one's."""
    with tempfile.TemporaryDirectory(prefix="train_speed_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        built = paths(width, compile)
        seconds = time_interleaved({p["path"]: p["call"] for p in built}, repeats, min_round_s=1.0)
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    rows = [{"path": p["path"], "batch": p["batch"], "images_per_s": p["batch"] / seconds[p["path"]],
             "setup_s": p["setup_s"]} for p in built]
    for row in rows:
        row["vs_reference"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.375, help="googlenet_small width (default 0.375)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per path (default 5)")
    parser.add_argument("--process-rounds", type=int, default=3,
                        help="child processes per thread or allocator setting (0: skip those rows)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="time torch.compile of the training step (a minute or more to compile)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="output (default: benchmarks/results/train_speed.json)")
    args = parser.parse_args(argv)
    if args.child:
        print(child_rate(args.width))
        return 0

    where = machine()  # before the run, whose own load would count in the load average
    rows = in_process_rows(args.width, args.compile, args.repeats)
    if args.process_rounds:
        rows += process_rows(args.width, args.process_rounds)
    table = text_table(["path", "batch", "img/s", "vs ref", "compile s"],
                       [[r["path"], str(r["batch"]), f"{r['images_per_s']:.0f}",
                         f"{r['vs_reference']:.2f}x", f"{r['setup_s']:.1f}" if r["setup_s"] else "-"]
                        for r in rows])
    text = (f"training step of googlenet_small (width {args.width}) on 1x28x28 inputs unless the row says, "
            f"{describe(where)}, "
            f"{where['threads']} threads, torch {torch.__version__}, median of {args.repeats} interleaved "
            f"rounds; thread and allocator rows: median of {args.process_rounds} child processes each\n\n{table}")
    print("\n" + text)
    out = Path(args.json or RESULTS / "train_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"width": args.width, "repeats": args.repeats, "machine": where, "rows": rows},
                              indent=1))
    out.with_name(out.stem + "_table.txt").write_text(text + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
