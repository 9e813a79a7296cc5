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


@pytest.mark.slow
def test_a_run_resumed_with_another_number_of_processes_says_the_data_order_differs_and_finishes(tmp_path):
    options = ["--model", "lenet", "--data", "builtin", "--epochs", "1", "--batch-size", "64",
               "--checkpoint-every-steps", "5", "--device", "cpu", "--quiet", "--out-dir", str(tmp_path),
               "--name", "moved", "--resume", "auto"]
    alone = _train(options, env={**ENV, KILL_BEFORE_RENAME: "step-000000010.state.pt"})  # stops after step 5
    assert alone.returncode == -signal.SIGKILL
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    pair = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "inceptorch.cli", "train",
                           *options], env=ENV, timeout=600, capture_output=True, text=True, check=False)
    assert pair.returncode == 0, pair.stderr
    notice = "resuming with 2 processes instead of 1: the data order and random draws from here on differ"
    assert pair.stdout.count(notice) == 1  # one line, from process 0
    log = (tmp_path / "moved" / "train.log").read_text()
    print(log)
    assert notice in log and "resumed at step 5 (epoch 1, batch 6)" in log and "epoch 1/1" in log


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


ELASTIC_STEPS = 20  # --checkpoint-every-steps of the elastic runs: 2 epochs of 100 steps


def _launch_elastic(tmp_path, data_root, name, env=ENV):
    """A 2-process torchrun run that torchrun restarts once if a process dies (lenet on real MNIST)."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    options = ["--model", "lenet", "--data", "mnist", "--data-root", str(data_root), "--train-samples", "3200",
               "--val-samples", "500", "--batch-size", "32", "--epochs", "2", "--optimizer", "adamw", "--lr", "0.003",
               "--checkpoint-every-steps", str(ELASTIC_STEPS),
               "--device", "cpu", "--quiet", "--out-dir", str(tmp_path), "--resume", "auto"]
    return subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                             "-m", "inceptorch.cli", "train", *options, "--name", name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory):
    """The folder of the elastic runs' uninterrupted twin (same seed, 2 processes)."""
    data_root = os.environ.get("INCEPTORCH_DATA") or pytest.skip("real data not available: set INCEPTORCH_DATA")
    folder = tmp_path_factory.mktemp("elastic")
    whole = _launch_elastic(folder, data_root, "whole")
    assert whole.wait(timeout=600) == 0, whole.stdout.read()
    return folder / "whole"


def _timeless(run: Path) -> list[dict]:
    rows = json.loads((run / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def _resumed_steps(log: str) -> list[int]:
    return [int(line.split("resumed at step ")[1].split()[0]) for line in log.splitlines() if "resumed at step" in line]


@pytest.mark.slow
@pytest.mark.realdata
def test_elastic_torchrun_restarts_a_killed_process_and_the_run_resumes_by_itself(tmp_path, data_root,
                                                                                   unbroken_run):
    elastic = _launch_elastic(tmp_path, data_root, "elastic")
    folder = tmp_path / "elastic"
    while not (folder / "checkpoints" / "step-000000040.state.pt").exists():  # in epoch 1 of 100 steps
        assert elastic.poll() is None, elastic.stdout.read()  # ended without writing it: the test fails
        time.sleep(0.05)
    victim = _worker_of_rank(elastic.pid, 1)
    os.kill(victim, signal.SIGKILL)
    output = elastic.communicate(timeout=600)[0]
    log = (folder / "train.log").read_text()
    print(f"killed rank 1 (pid {victim}) once step-000000040.state.pt existed\n{output}\n{log}")
    assert elastic.returncode == 0
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {victim})" in output  # torchrun saw it die, restarted
    resumed = _resumed_steps(log)
    assert len(resumed) == 1 and resumed[0] >= 40
    assert _same_weights(folder / "last.safetensors", unbroken_run / "last.safetensors")
    assert _timeless(folder) == _timeless(unbroken_run) and _timeless(unbroken_run)[-1]["val_acc"] > 0.5  # chance: 0.1


@pytest.mark.slow
@pytest.mark.realdata
def test_elastic_rank_0_killed_while_writing_a_step_checkpoint_resumes_from_the_previous_one(tmp_path, data_root,
                                                                                             unbroken_run):
    # rank 0 alone writes step checkpoints, with no barrier: killed after the temporary file of step 60 is
    # complete and before its rename (the hook spares torchrun's restarted attempt)
    cut = _launch_elastic(tmp_path, data_root, "cut", env={**ENV, KILL_BEFORE_RENAME: "step-000000060.state.pt"})
    output = cut.communicate(timeout=600)[0]
    folder = tmp_path / "cut"
    log = (folder / "train.log").read_text()
    print(f"{output}\n{log}")
    assert cut.returncode == 0
    assert "failed (exitcode: -9) local_rank: 0" in output  # torchrun saw rank 0 die, restarted the group
    assert _resumed_steps(log) == [40]  # the checkpoint before the torn one
    assert not list((folder / "checkpoints").glob("*.tmp"))
    assert _same_weights(folder / "last.safetensors", unbroken_run / "last.safetensors")
    assert _timeless(folder) == _timeless(unbroken_run)
