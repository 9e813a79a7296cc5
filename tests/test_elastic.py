"""Step checkpoints, ``--resume auto`` and elastic torchrun: a run that loses a process or is killed in
the middle of writing a checkpoint finishes with the weights of a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from inceptorch.checkpoints import step_files
from inceptorch.weights import KILL_BEFORE_RENAME

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread in every run, so that their sums agree to the bit


def _train(args, env=ENV, timeout=600):
    return subprocess.run([sys.executable, "-m", "inceptorch.cli", "train", *args], env=env, timeout=timeout,
                          capture_output=True, text=True, check=False)


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)


@pytest.mark.slow
def test_a_kill_while_a_step_checkpoint_is_written_resumes_from_the_previous_one(tmp_path):
    options = ["--model", "lenet", "--data", "builtin", "--epochs", "2", "--batch-size", "64",
               "--checkpoint-every-steps", "5", "--keep-checkpoints", "3", "--device", "cpu", "--quiet",
               "--out-dir", str(tmp_path)]
    assert _train([*options, "--name", "whole"]).returncode == 0
    killed = _train([*options, "--name", "cut", "--resume", "auto"],
                    env={**ENV, KILL_BEFORE_RENAME: "step-000000010.state.pt"})
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "cut"
    assert [p.name for p in step_files(folder)] == ["step-000000005.state.pt"]
    assert list((folder / "checkpoints").glob(".step-000000010.state.pt.*.tmp"))  # complete, never renamed
    resumed = _train([*options, "--name", "cut", "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr
    log = (folder / "train.log").read_text()
    assert "resumed at step 5 (epoch 1, batch 6)" in log
    assert not list((folder / "checkpoints").glob("*.tmp"))
    assert _same_weights(folder / "last.safetensors", tmp_path / "whole" / "last.safetensors")


def _worker_of_rank(torchrun_pid: int, rank: int) -> int | None:
    """The pid of torchrun's worker process of this rank (read from /proc: its RANK variable)."""
    for task in Path(f"/proc/{torchrun_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(child)
    return None


@pytest.mark.slow
@pytest.mark.realdata
def test_elastic_torchrun_restarts_a_killed_process_and_the_run_resumes_by_itself(tmp_path, data_root):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    options = ["--model", "lenet", "--data", "mnist", "--data-root", str(data_root), "--train-samples", "3200",
               "--val-samples", "500", "--batch-size", "32", "--epochs", "2", "--optimizer", "adamw", "--lr", "0.003",
               "--checkpoint-every-steps", "20",
               "--device", "cpu", "--quiet", "--out-dir", str(tmp_path), "--resume", "auto"]

    def launch(name):
        return subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                                 "-m", "inceptorch.cli", "train", *options, "--name", name],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    whole = launch("whole")
    assert whole.wait(timeout=600) == 0, whole.stdout.read()
    elastic = launch("elastic")
    folder = tmp_path / "elastic"
    deadline = time.monotonic() + 300
    while not (folder / "checkpoints" / "step-000000040.state.pt").exists():  # in epoch 1 of 100 steps
        assert elastic.poll() is None and time.monotonic() < deadline, elastic.stdout.read()
        time.sleep(0.05)
    victim = _worker_of_rank(elastic.pid, 1)
    os.kill(victim, signal.SIGKILL)
    output = elastic.communicate(timeout=600)[0]
    log = (folder / "train.log").read_text()
    print(f"killed rank 1 (pid {victim}) once step-000000040.state.pt existed\n{output}\n{log}")
    assert elastic.returncode == 0
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {victim})" in output  # torchrun saw it die, restarted
    resumed = [line for line in log.splitlines() if "resumed at step" in line]
    assert len(resumed) == 1 and int(resumed[0].split("resumed at step ")[1].split()[0]) >= 40
    assert _same_weights(folder / "last.safetensors", tmp_path / "whole" / "last.safetensors")
    def timeless(run):
        rows = json.loads((tmp_path / run / "metrics.json").read_text())
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]

    assert timeless("elastic") == timeless("whole") and timeless("whole")[-1]["val_acc"] > 0.5  # chance: 0.1
