"""The same `inceptorch train` command under torchrun: 2 CPU processes (gloo) against 1, same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _training_data import write_bars_npz
from safetensors.torch import load_file

import inceptorch


@pytest.mark.slow
def test_two_processes_learn_as_one_does(tmp_path):
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=256, n_val=64)
    options = ["--model", "mnist_inception", "--data", str(bars), "--epochs", "2", "--batch-size", "32",
               "--lr", "0.05", "--warmup-epochs", "0", "--augment", "flip", "--device", "cpu", "--quiet",
               "--out-dir", str(tmp_path)]
    alone = inceptorch.train({"model": "mnist_inception", "data": str(bars), "epochs": 2, "batch_size": 32,
                              "lr": 0.05, "warmup_epochs": 0, "augment": "flip", "device": "cpu", "quiet": True,
                              "out_dir": str(tmp_path), "name": "alone"})
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "inceptorch.cli",
                           "train", *options, "--name", "pair"], check=True, env=env, timeout=240,
                          capture_output=True, text=True)
    reports = [line for line in done.stdout.splitlines() if line.startswith("val acc")]
    assert len(reports) == 1 and reports[0].endswith(f"run folder {tmp_path / 'pair'}"), done.stdout

    pair = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    assert len(pair) == 2 and [p.name for p in tmp_path.iterdir() if p.name.startswith("pair")] == ["pair"]
    assert pair[-1]["val_acc"] >= 0.9 and alone.metrics["val_acc"] >= 0.9
    assert abs(pair[-1]["val_acc"] - alone.metrics["val_acc"]) <= 0.05
    # mnist_inception has no batch norm: each global batch is the same, so the gradients agree but for
    # rounding, and so do the weights
    ours = load_file(tmp_path / "pair" / "last.safetensors")
    theirs = load_file(alone.run_dir / "last.safetensors")
    assert all((ours[k] - theirs[k]).abs().max() < 1e-3 for k in ours)
