"""Inception v3 training steps at 299x299 with AMP: inceptorch's, eager, channels-last and compiled,
against timm's eager AMP step, in one run.

Every path is one whole step (forward without the aux head or dropout, as timm's inception_v3 trains
by default; cross-entropy with label smoothing 0.1; backward; SGD with momentum) on one fixed batch
of random images. Every model starts from the same weights: timm's randomly initialized inception_v3,
loaded into inceptorch's through a safetensors file as any timm checkpoint is. So the first step's
loss must agree between the paths (up to the rounding of reduced precision), and the table prints it
as the check that they compute the same thing. Paths are timed in rounds that visit each in turn
(``inceptorch.inference.bench.time_interleaved``: medians over rounds); ratios are against timm's
eager step in NCHW, the layout timm trains in unless told ``--channels-last``. AMP is what ``--amp``
gives inceptorch's training loop on this device (bfloat16, or float16 with loss scaling on GPUs
without bfloat16), for both libraries; ``--precision both`` (the default on a GPU) times bfloat16 and
float16 autocast (with loss scaling) in turn, each against timm's step in the same precision;
torch.compile starts from an empty cache.

    python benchmarks/inception_v3_step.py                 # on the GPU (batch 128, bf16 and fp16), else the CPU (batch 8)
    python benchmarks/inception_v3_step.py --device cpu --batch 4 --repeats 3 --no-compile
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from inceptorch import create_model
from inceptorch.config import TrainConfig
from inceptorch.cpu import describe, machine
from inceptorch.devices import pick_device
from inceptorch.inference.bench import time_interleaved
from inceptorch.tables import text_table
from inceptorch.training.steps import autocast_dtype, make_optimizer, training_loss

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SIZE = 299
CLASSES = 1000


def reference_model():
    """timm's inception_v3, randomly initialized (the [dev] extra has timm; so does the GPU image)."""
    try:
        import timm
    except ImportError:
        print('timm is not installed: pip install "timm==1.0.31" (or pip install -e ".[dev]")', file=sys.stderr)
        raise SystemExit(2) from None
    torch.manual_seed(0)
    return timm.create_model("inception_v3", pretrained=False, num_classes=CLASSES)


def inceptorch_model(reference, folder: str):
    """inceptorch's inception_v3 with the reference's weights, read back as a timm checkpoint file."""
    path = Path(folder) / "timm_inception_v3.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    return create_model("inception_v3", num_classes=CLASSES, weights=str(path), dropout=0.0)  # timm's drop_rate


def training_step(model, x, y, device, dtype, channels_last: bool, compiled: bool, ours: bool):
    """A function of nothing running one training step, the seconds its first call took, and that
    call's loss."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    x = x.to(device).contiguous(memory_format=memory_format)
    y = y.to(device)
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4)
    optimizer = (make_optimizer(model, config) if ours else
                 torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = forward(x)
            loss = (training_loss(logits, [], y, 0.0, label_smoothing=0.1) if ours else
                    F.cross_entropy(logits, y, label_smoothing=0.1))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()  # both training loops read the loss every step (and it synchronizes the GPU)

    started = time.perf_counter()
    first_loss = step()
    return step, time.perf_counter() - started, first_loss


def build_paths(device, dtype, batch: int, compile: bool, folder: str) -> list[dict]:
    torch.manual_seed(1)
    x, y = torch.randn(batch, 3, SIZE, SIZE), torch.randint(0, CLASSES, (batch,))
    rows = [("timm, eager, NCHW (reference)", False, False, False),
            ("timm, eager, channels-last", True, False, False),
            ("inceptorch, eager, NCHW", False, False, True),
            ("inceptorch, eager, channels-last", True, False, True)]
    if compile:
        rows.append(("inceptorch, torch.compile, channels-last", True, True, True))
    reference = reference_model()
    built = []
    for name, channels_last, compiled, ours in rows:
        print(f"building: {name}", flush=True)
        model = inceptorch_model(reference, folder) if ours else reference_model()
        step, first_s, loss = training_step(model, x, y, device, dtype, channels_last, compiled, ours)
        built.append({"path": name, "call": step, "first_loss": loss, "compile_s": first_s if compiled else 0.0})
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU where there is one), cpu or cuda")
    parser.add_argument("--batch", type=int, help="images per step (default: 128 on a GPU, 8 on the CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per path (default 5)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="time torch.compile of inceptorch's step too (a minute or more to compile)")
    parser.add_argument("--precision", choices=("auto", "bfloat16", "float16", "both"),
                        help="autocast dtype: auto (what --amp gives on this device), bfloat16, float16, or both "
                             "in turn (default: both on a GPU, auto on the CPU)")
    parser.add_argument("--json", metavar="FILE", help="output (default: benchmarks/results/inception_v3_step.json)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    batch = args.batch or (128 if device.type == "cuda" else 8)
    choice = args.precision or ("both" if device.type == "cuda" else "auto")
    dtypes = {"auto": [autocast_dtype(TrainConfig(amp=True), device)], "bfloat16": [torch.bfloat16],
              "float16": [torch.float16], "both": [torch.bfloat16, torch.float16]}[choice]
    torch.backends.cudnn.benchmark = True  # both libraries' training scripts turn it on
    where = machine(device)  # before the run, whose own load would count in the load average

    rows = []
    for dtype in dtypes:
        precision = str(dtype).removeprefix("torch.") if dtype else "float32"
        with tempfile.TemporaryDirectory(prefix="inception_v3_step_") as folder:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder) / "inductor")
            built = build_paths(device, dtype, batch, args.compile, folder)
            seconds = time_interleaved({p["path"]: p["call"] for p in built}, args.repeats, min_round_s=1.0)
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        timm_nchw = batch / seconds[built[0]["path"]]
        rows += [{"precision": precision, "path": p["path"], "images_per_s": batch / seconds[p["path"]],
                  "vs_timm": batch / seconds[p["path"]] / timm_nchw, "first_loss": p["first_loss"],
                  "compile_s": p["compile_s"]} for p in built]

    table = text_table(["autocast", "path", "img/s", "vs timm", "first loss", "compile s"],
                       [[r["precision"], r["path"], f"{r['images_per_s']:.1f}", f"{r['vs_timm']:.2f}x",
                         f"{r['first_loss']:.4f}", f"{r['compile_s']:.1f}" if r["compile_s"] else "-"]
                        for r in rows])
    precision = ", ".join(sorted({r["precision"] for r in rows}))
    text = (f"inception_v3 training step, {batch}x3x{SIZE}x{SIZE}, autocast {precision} (vs timm: against "
            f"timm's eager NCHW step in the same precision), on {describe(where)}, torch {torch.__version__}, "
            f"median of {args.repeats} interleaved rounds\n\n{table}")
    print("\n" + text)
    out = Path(args.json or RESULTS / "inception_v3_step.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": batch, "precision": precision, "repeats": args.repeats,
                               "machine": where, "rows": rows}, indent=1))
    out.with_name(out.stem + "_table.txt").write_text(text + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
