"""Reliability: training runs killed (SIGKILL, Ctrl-C) and resumed end exactly where an unbroken run
ends, with every file on disk readable at every moment; full disks, unwritable folders, non-finite
losses and a dead torchrun process give clear errors and lose nothing.

The runs are real ``inceptorch train`` processes, started through a small wrapper that slows each
training step and each fsync (so that kills land inside steps and inside checkpoint writes) and logs
the steps it has done; the numbers they compute are untouched.
"""

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_data import bar_images, write_bars_npz
from safetensors.torch import load_file
from test_data import write_idx_set

import inceptorch
from inceptorch import cli, config, runs, sources, weights
from inceptorch.errors import ConfigError, DataError, TrainingError

WRAPPER = '''
import os, signal, sys
import inceptorch.training.loop as loop

real_fsync, real_loss = os.fsync, loop.training_loss
faulty = os.environ.get("RANK", "0") == os.environ.get("FAULT_RANK", "0")  # the process the faults hit
writes, steps = 0, 0

def fsync_or_die(fd):
    """SIGKILL inside the k-th write of a file whose temporary name starts as KILL_IN_WRITE ("prefix:k") says:
    the temporary file is written, neither fsynced nor renamed."""
    global writes
    prefix, _, k = os.environ.get("KILL_IN_WRITE", "").partition(":")
    if faulty and prefix and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(prefix):
        writes += 1
        if writes == int(k):
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)

def counted_loss(*args, **kwargs):
    """SIGKILL (KILL_AT_STEP) or Ctrl-C (SIGINT_AT_STEP) inside this process's n-th training step."""
    global steps
    steps += 1
    for variable, sent in (("KILL_AT_STEP", signal.SIGKILL), ("SIGINT_AT_STEP", signal.SIGINT)):
        if faulty and steps == int(os.environ.get(variable, "0")):
            os.kill(os.getpid(), sent)
    return real_loss(*args, **kwargs)

os.fsync, loop.training_loss = fsync_or_die, counted_loss
from inceptorch.cli import main
sys.exit(main())
'''

TIMELESS = ("seconds", "images_per_s")


def _options(bars: Path, out_dir: Path) -> list[str]:
    return ["--model", "lenet", "--data", str(bars), "--epochs", "3", "--batch-size", "16", "--lr", "0.02",
            "--augment", "flip,crop", "--seed", "3", "--device", "cpu", "--workers", "0", "--quiet",
            "--out-dir", str(out_dir)]


class Trainer:
    """Starts ``inceptorch train`` processes through the wrapper, with the faults asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.wrapper = folder / "wrapper.py"
        self.wrapper.write_text(WRAPPER)
        self.bars = write_bars_npz(folder / "bars.npz", n_train=96, n_val=32)  # 6 steps an epoch

    def start(self, *arguments, processes=1, **faults) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **{k.upper(): str(v) for k, v in faults.items()}}
        launcher = [sys.executable] if processes == 1 else [
            str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(processes)]
        return subprocess.Popen([*launcher, str(self.wrapper), "train", *arguments], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def fresh(self, name: str, **faults) -> subprocess.Popen:
        return self.start(*_options(self.bars, self.folder), "--name", name, **faults)

    def resume(self, name: str, **faults) -> subprocess.Popen:
        return self.start("--resume", str(self.folder / name), **faults)


def _finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def assert_every_file_reads(run_dir: Path) -> int:
    """Every checkpoint, metrics and config file of the run folder reads whole; returns how many."""
    checked = 0
    for path in sorted(run_dir.iterdir()):
        if path.suffix == ".safetensors":
            assert load_file(path) and weights.read_metadata(path)["model"] == "lenet"
        elif path.name == runs.STATE_FILE:
            assert runs.load_state(run_dir)["model"]
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            continue
        checked += 1
    return checked


def assert_same_run(run_dir: Path, reference: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        expected, got = load_file(reference / name), load_file(run_dir / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name

    def timeless(folder):
        rows = json.loads((folder / "metrics.json").read_text())
        return [{k: v for k, v in row.items() if k not in TIMELESS} for row in rows]

    assert timeless(run_dir) == timeless(reference)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> Trainer:
    """A folder with the wrapper, the data and the reference: one unbroken run."""
    trainer = Trainer(tmp_path_factory.mktemp("reliability"))
    rc, _, err = _finish(trainer.fresh("whole"))
    assert rc == 0, err
    return trainer


@pytest.mark.slow
def test_runs_killed_inside_checkpoint_writes_and_inside_steps_resume_to_the_unbroken_result(trainer):
    """SIGKILL inside checkpoint writes (after the temporary file is written, before its fsync and rename)
    and inside training steps, each at a set place, then --resume, until the run completes: same weights
    and metrics, and no file is ever torn."""
    run_dir = trainer.folder / "killed"
    kills = [{"kill_in_write": f".{runs.STATE_FILE}.:2"},  # epoch 2's state: epoch 1's is there to resume
             {"kill_at_step": 3},  # inside epoch 2, resumed from epoch 1's state
             {"kill_in_write": ".last.safetensors.:2"},  # epoch 3's weights, after epoch 2 was committed
             {"kill_at_step": 5}]  # inside epoch 3
    process = trainer.fresh("killed", **kills[0])
    for kill in kills[1:] + [{}]:
        assert process.wait(timeout=120) == -signal.SIGKILL
        assert assert_every_file_reads(run_dir) >= 4
        process = trainer.resume("killed", **kill)
    rc, _, err = _finish(process)
    assert rc == 0, err
    assert_same_run(run_dir, trainer.folder / "whole")
    assert assert_every_file_reads(run_dir) >= 6
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # resuming cleared them


@pytest.mark.slow
def test_ctrl_c_saves_the_step_and_resume_finishes_the_same_run(trainer):
    run_dir = trainer.folder / "interrupted"
    rc, _, err = _finish(trainer.fresh("interrupted", sigint_at_step=3))  # Ctrl-C inside step 3 of epoch 1
    assert rc == 130, err
    assert "interrupted (Ctrl-C) at step 4 (epoch 1, batch 4)" in err and f"--resume {run_dir}" in err
    assert "Traceback" not in err
    saved = runs.load_state(run_dir)
    assert saved["epoch"] == 0 and saved["partial"]["batches"] == 3  # the step it was inside finished

    rc, _, err = _finish(trainer.resume("interrupted"))
    assert rc == 0, err
    assert_same_run(run_dir, trainer.folder / "whole")


def test_checkpoints_are_written_to_a_temporary_file_fsynced_then_renamed(tmp_path, monkeypatch):
    """The order of the system calls behind every checkpoint file."""
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", Path(a).name, Path(b).name)),
                                                     real_replace(a, b)))
    run = runs.Run(config.resolve({"out_dir": str(tmp_path), "name": "r", "quiet": True}))
    calls.clear()
    model = inceptorch.create_model("lenet", num_classes=4, in_chans=1)
    run.save_checkpoint(model, {"epoch": 1}, {"epoch": 1}, best=True)
    run.close()
    renamed = [c for c in calls if c != "fsync"]
    assert [c[2] for c in renamed] == ["last.safetensors", "best.safetensors", runs.STATE_FILE]
    for _, temporary, final in renamed:
        assert temporary.startswith(f".{final}.") and temporary.endswith(".tmp")
    # each rename follows the fsync of its file, and is followed by the fsync of the folder
    assert calls == [c for r in renamed for c in ("fsync", r, "fsync")]


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=32, n_val=16)
    options = {"model": "lenet", "data": str(bars), "epochs": 2, "batch_size": 16, "quiet": True,
               "out_dir": str(tmp_path), "name": "full", "workers": 0, "device": "cpu"}
    real_fdopen, writes = os.fdopen, []

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *args, **kwargs):
        writes.append(1)
        f = real_fdopen(fd, *args, **kwargs)
        return FullDisk(f) if (tmp_path / "full" / "metrics.json").exists() else f

    monkeypatch.setattr(os, "fdopen", fdopen)  # the disk fills up once the first epoch is saved and logged
    with pytest.raises(TrainingError, match="No space left on device") as error:
        inceptorch.train(options)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    message = str(error.value)
    assert "epoch 2" in message and "--resume" in message and "\n" not in message
    run_dir = tmp_path / "full"
    assert runs.load_state(run_dir)["epoch"] == 1
    assert weights.read_metadata(run_dir / "last.safetensors")["epoch"] == 1
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert assert_every_file_reads(run_dir) >= 4
    resumed = inceptorch.train({"resume": str(run_dir), "quiet": True})  # space freed: it goes on
    assert resumed.metrics["epoch"] == 2


def test_unwritable_run_folder_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=32, n_val=16)
    arguments = ["train", "--model", "lenet", "--data", str(bars), "--epochs", "1", "--quiet",
                 "--device", "cpu"]
    assert cli.main([*arguments, "--out-dir", str(blocker)]) == 2
    assert "cannot write the run folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(0o500)
        assert cli.main([*arguments, "--out-dir", str(locked)]) == 2
        assert "cannot write the run folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot write the run folder"):
        runs.Run(config.resolve({"out_dir": "/proc/inceptorch-test", "quiet": True}))


def test_detect_anomaly_names_the_backward_that_gives_nan(tmp_path, monkeypatch):
    """The forward stays finite, the backward does not: --detect-anomaly names the operation at once."""
    from inceptorch.training import loop

    class NaNGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    real_loss = loop.training_loss
    monkeypatch.setattr(loop, "training_loss", lambda *a, **k: NaNGradient.apply(real_loss(*a, **k)))
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=32, n_val=16)
    options = {"model": "lenet", "data": str(bars), "epochs": 1, "batch_size": 16, "quiet": True,
               "out_dir": str(tmp_path), "workers": 0, "device": "cpu"}
    with pytest.raises(TrainingError, match="at step 2 "):  # found one step late, at the next forward
        inceptorch.train(options, name="plain")
    with pytest.raises(RuntimeError, match="NaNGradientBackward.* returned nan"):
        inceptorch.train(options, name="debug", detect_anomaly=True)
    assert not torch.is_anomaly_enabled()  # switched off again


def test_cli_has_the_debugging_and_timeout_flags():
    parsed = cli.build_parser().parse_args(["train", "--detect-anomaly", "--dist-timeout", "20"])
    resolved = config.resolve({k: v for k, v in vars(parsed).items() if k not in ("run", "command")})
    assert resolved.detect_anomaly and resolved.dist_timeout == 20
    with pytest.raises(ConfigError, match="dist-timeout"):
        config.resolve({"dist_timeout": 0})


@pytest.mark.parametrize("damage, words", [
    (lambda images, labels: (images, labels[:-3]), "do not match"),  # fewer labels than images
    (lambda images, labels: (images.reshape(len(images), -1)[:, :7], labels), "do not match"),  # 2-D images
    (lambda images, labels: (images, labels.reshape(-1, 2)), "do not match"),  # 2-D labels
])
def test_idx_files_with_wrong_counts_are_named(tmp_path, damage, words):
    """Files each well formed alone, but not a data set together (test_data covers bad magic numbers and
    truncation)."""
    images, labels = bar_images(12, seed=0)
    write_idx_set(tmp_path, "train", *damage(images, labels.astype("uint8")), compressed=True)
    with pytest.raises(DataError, match=words) as error:
        sources.open_source(config.resolve({"data": "mnist", "data_root": str(tmp_path)}))
    assert "train-images-idx3-ubyte.gz" in str(error.value) and "train-labels-idx1-ubyte.gz" in str(error.value)


@pytest.mark.parametrize("content, words", [
    (b"", "magic"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),  # header cut inside the sizes
    (b"\x1f\x8b\x08\x00garbage", "not a readable IDX file"),  # a gzip stream cut short
])
def test_idx_files_cut_short_are_named(tmp_path, content, words):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content if content.startswith(b"\x1f\x8b") else gzip.compress(content))
    with pytest.raises(DataError, match=words) as error:
        sources.read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.slow
def test_killed_torchrun_process_stops_the_run_and_it_resumes(trainer):
    """Two gloo processes; process 1 is killed inside its 8th step (epoch 2, batch 2): the run stops with
    an error naming the dead process instead of hanging, and ``--resume`` under torchrun finishes it from
    the epoch 1 checkpoint. (How soon torchrun stops the other process: benchmarks/torchrun_stop.py.)"""
    run_dir = trainer.folder / "pair"
    process = trainer.start(*_options(trainer.bars, trainer.folder), "--name", "pair", "--dist-timeout", "30",
                            processes=2, fault_rank=1, kill_at_step=8)
    rc, _, err = _finish(process, timeout=300)
    assert rc != 0
    assert "Signal 9 (SIGKILL)" in err  # torchrun names the process that died and how
    history = runs.load_state(run_dir)["history"]
    assert len(history) == 1

    rc, _, err = _finish(trainer.start("--resume", str(run_dir), processes=2), timeout=180)
    assert rc == 0, err
    final = json.loads((run_dir / "metrics.json").read_text())
    assert len(final) == 3 and final[:len(history)] == history  # the epochs before the kill are kept as they were
