"""Issue 40's training options: the weight average (--model-ema), gradient accumulation, --sync-bn,
MixUp/CutMix, augmentation policies, TensorFlow's RMSProp, and a bad value of each option."""

import json
import os
import socket
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _training_data import write_bars_npz
from PIL import Image
from safetensors.torch import load_file
from timm.data.mixup import mixup_target
from timm.optim import RMSpropTF as TimmRMSpropTF
from timm.utils.model_ema import ModelEmaV3
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import inceptorch
from inceptorch.checkpoints import step_files
from inceptorch.cli import main
from inceptorch.config import TrainConfig, resolve
from inceptorch.data import ImageFiles
from inceptorch.devices import Processes
from inceptorch.ema import ModelEma, ema_decay
from inceptorch.errors import ConfigError
from inceptorch.images import Preprocessing
from inceptorch.mixing import Mixing
from inceptorch.models import load_model
from inceptorch.optimizers import RMSpropTF
from inceptorch.training import loop
from inceptorch.training.steps import sync_batch_norm, training_loss


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def _sgd_steps(net, steps: int, record):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.3)
    for step in range(1, steps + 1):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        record(step)


def test_ema_after_k_steps_is_the_closed_form_average_of_the_recorded_weights_and_timms():
    net, decay, k = _small_net(), 0.9, 40
    ours, theirs = ModelEma(net, decay), ModelEmaV3(net, decay=decay, use_warmup=True)
    recorded = []

    def record(step):
        recorded.append({name: value.clone() for name, value in net.state_dict().items()})
        ours.update(net, step)
        theirs.update(net, step=step)

    _sgd_steps(net, k, record)
    decays = [ema_decay(step, decay) for step in range(1, k + 1)]
    assert decays[0] == 0 and decays[1] == pytest.approx(1 - 2 ** (-2 / 3)) and decays[-1] == decay
    for name, value in ours.state_dict().items():
        if not value.is_floating_point():
            continue
        # EMA_k = sum_j (1 - d_j) prod_{i > j} d_i W_j: every recorded weight with its share
        shares = [(1 - decays[j]) * torch.tensor(decays[j + 1:]).prod().item() for j in range(k)]
        closed = sum(share * weights[name] for share, weights in zip(shares, recorded))
        assert sum(shares) == pytest.approx(1.0)
        torch.testing.assert_close(value, closed, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(value, theirs.module.state_dict()[name], rtol=1e-5, atol=1e-6)


def _bars_options(tmp_path, **options):
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=128, n_val=32)
    return {"model": "mnist_inception", "data": str(bars), "epochs": 2, "batch_size": 16, "lr": 0.05,
            "warmup_epochs": 0, "device": "cpu", "quiet": True, "out_dir": str(tmp_path), **options}


def test_ema_is_validated_written_usable_as_a_checkpoint_and_restored_on_resume(tmp_path, monkeypatch):
    options = _bars_options(tmp_path, model_ema=0.9, checkpoint_every_steps=3)
    whole = inceptorch.train(options, name="whole")
    assert all(row["ema_val_acc"] is not None and row["val_acc"] is not None for row in whole.history)
    ema = load_model(whole.run_dir / "ema.safetensors")  # as evaluate, predict and export load it
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(),
                                                      load_model(whole.run_dir / "last.safetensors")
                                                      .state_dict().values()))
    # best is chosen on the averaged weights (timm's choice with an EMA): best.safetensors holds them
    best = max(whole.history, key=lambda row: row["ema_val_acc"])
    assert whole.best_epoch == best["epoch"] and whole.best_val_acc == best["ema_val_acc"]
    assert inceptorch.evaluate(whole.run_dir / "ema.safetensors").num_images == 32

    real_loss, calls = loop.training_loss, []

    def crash_mid_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 128 // 16 + 5:
            raise KeyboardInterrupt  # as if the machine were lost in step 5 of epoch 2: steps 1-4 were done
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "training_loss", crash_mid_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        inceptorch.train(options, name="split")
    monkeypatch.setattr(loop, "training_loss", real_loss)
    resumed = inceptorch.train({**options, "name": "split", "resume": "auto"})
    assert "resumed at step 12 (epoch 2, batch 5)" in (resumed.run_dir / "train.log").read_text()
    for name in ("ema", "last", "best"):
        expected, got = (load_file(run / f"{name}.safetensors") for run in (whole.run_dir, resumed.run_dir))
        assert all(torch.equal(expected[k], got[k]) for k in expected), name


def _step_weights(run_dir):
    """The weights and the running mean loss of the epoch at every step checkpoint of a run."""
    states = [torch.load(path, weights_only=True) for path in step_files(run_dir)]
    return {state["step"]: (state["model"], state["partial"]["loss_sum"] / state["partial"]["seen"])
            for state in states}


def test_accumulating_four_batches_matches_a_four_times_larger_batch_step_for_step(tmp_path):
    options = _bars_options(tmp_path, checkpoint_every_steps=1, keep_checkpoints=100, epochs=1)
    large = inceptorch.train({**options, "batch_size": 32}, name="large")
    small = inceptorch.train({**options, "batch_size": 8, "grad_accum_steps": 4}, name="accumulated")
    expected, got = _step_weights(large.run_dir), _step_weights(small.run_dir)
    assert sorted(expected) == sorted(got) == list(range(1, 128 // 32))  # optimizer steps, the last one at epoch end
    for step in expected:
        (weights, loss), (their_weights, their_loss) = expected[step], got[step]
        assert loss == pytest.approx(their_loss, rel=1e-5)
        for name in weights:
            torch.testing.assert_close(their_weights[name], weights[name], rtol=1e-4, atol=1e-6)
    assert small.history[0]["train_loss"] == pytest.approx(large.history[0]["train_loss"], rel=1e-5)
    assert small.history[0]["lr"] == large.history[0]["lr"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_all_reduces(rank, world, port, data, out):
    """One process of a 2-process gloo run whose DDP counts the gradient all-reduces (a comm hook)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    buckets = []

    class CountingDDP(nn.parallel.DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

            def counted(state, bucket):
                buckets.append(bucket.index())
                return allreduce_hook(state, bucket)

            self.register_comm_hook(None, counted)

    nn.parallel.DistributedDataParallel = CountingDDP
    inceptorch.train({"model": "lenet", "data": data, "epochs": 1, "batch_size": 16, "grad_accum_steps": 4,
                      "device": "cpu", "quiet": True, "out_dir": out, "name": "ddp", "val_split": 0})
    with open(os.path.join(out, f"buckets-{rank}.json"), "w") as f:
        json.dump(buckets, f)


@pytest.mark.slow
def test_accumulation_under_ddp_all_reduces_once_per_optimizer_step(tmp_path):
    data = write_bars_npz(tmp_path / "bars.npz", n_train=128, n_val=8)
    torch.multiprocessing.spawn(_count_all_reduces, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2)
    steps = 128 // (16 * 4)  # 8 micro-batches of 16 images (8 per process), 2 optimizer steps
    for rank in range(2):
        buckets = json.loads((tmp_path / f"buckets-{rank}.json").read_text())
        # without no_sync every micro-batch's backward would all-reduce: 8 times the buckets, not 2
        assert buckets and len(buckets) == steps * len(set(buckets))


def test_mixup_and_cutmix_targets_sum_to_one_and_the_loss_is_the_mixed_cross_entropy():
    torch.manual_seed(0)
    x, y, classes, smoothing = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0]), 5, 0.1
    for mixing in (Mixing(mixup=0.8), Mixing(cutmix=1.0), Mixing(mixup=0.8, cutmix=1.0, switch_prob=0.5)):
        for seed in range(6):
            mixed, target = mixing(x, y, classes, seed)
            assert torch.allclose(target.sum(1), torch.ones(6))
            lam = target[0, y[0]].item() if y[0] != y[-1] else None
            if lam is None or lam == 1.0:
                continue
            # timm's smoothed, mixed targets (one process: its partner is the mirrored image, as ours),
            # and the cross-entropy against them written out
            theirs = mixup_target(y, classes, lam, smoothing)
            logits = torch.randn(6, classes)
            by_hand = -(theirs * logits.log_softmax(1)).sum(1).mean()
            torch.testing.assert_close(training_loss(logits, [], target, 0.0, smoothing), by_hand)
            pasted = (mixed != x).any(1).float().mean((1, 2))  # the share of each image taken from its partner
            if torch.equal(mixed, x * lam + x.flip(0) * (1 - lam)):
                continue  # MixUp
            assert pasted[0].item() == pytest.approx(1 - lam)  # CutMix: the weight is the pasted area's


def _mix_a_share(rank, world, port, out):
    """One process of a gloo run: mixes its share (data.shard's: every world-th image) of a global batch."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x, y = torch.arange(12 * 4 * 4, dtype=torch.float32).view(12, 1, 4, 4), torch.arange(12) % 5
    shares = {}
    for name, mixing in (("mixup", Mixing(mixup=0.8)), ("cutmix", Mixing(cutmix=1.0))):
        shares[name] = mixing(x[rank::world], y[rank::world], 5, (3, 0, 7), rank, world)
    torch.save(shares, os.path.join(out, f"share-{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_a_global_batch_mixed_over_several_processes_equals_it_mixed_by_one(world, tmp_path):
    x, y = torch.arange(12 * 4 * 4, dtype=torch.float32).view(12, 1, 4, 4), torch.arange(12) % 5
    torch.multiprocessing.spawn(_mix_a_share, args=(world, _free_port(), str(tmp_path)), nprocs=world)
    for name, mixing in (("mixup", Mixing(mixup=0.8)), ("cutmix", Mixing(cutmix=1.0))):
        whole_x, whole_target = mixing(x, y, 5, (3, 0, 7))
        assert not torch.equal(whole_x, x)  # this seed mixes
        for rank in range(world):
            share_x, share_target = torch.load(tmp_path / f"share-{rank}.pt")[name]
            assert torch.equal(share_x, whole_x[rank::world]) and torch.equal(share_target, whole_target[rank::world])


def test_sync_bn_converts_batch_norm_for_gpu_processes_and_is_refused_elsewhere(capsys, tmp_path):
    config = resolve({"model": "googlenet_small", "sync_bn": True})
    converted = sync_batch_norm(inceptorch.create_model("googlenet_small", num_classes=3), config,
                                Processes(0, 2), torch.device("cuda"))  # converting needs no GPU; running does
    kinds = {type(m) for m in converted.modules()}
    assert nn.SyncBatchNorm in kinds and nn.BatchNorm2d not in kinds
    with pytest.raises(ConfigError, match="GPU processes of a torchrun run"):
        sync_batch_norm(converted, config, Processes(), torch.device("cpu"))
    code = main(["train", "--model", "googlenet_small", "--sync-bn", "--device", "cpu", "--epochs", "1",
                 "--out-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--sync-bn" in err


def test_rmsproptf_steps_as_timms_rmsproptf():
    ours_net, timm_net = _small_net(), _small_net()
    ours = RMSpropTF(ours_net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=4e-5)
    theirs = TimmRMSpropTF(timm_net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=4e-5)
    for _ in range(5):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        for net, optimizer in ((ours_net, ours), (timm_net, theirs)):
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    for a, b in zip(ours_net.parameters(), timm_net.parameters()):
        torch.testing.assert_close(a, b)


def test_auto_augment_policies_draw_per_image_from_the_runs_seed(tmp_path):
    files = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8,
                                      generator=torch.Generator().manual_seed(i)).numpy()).save(path)
        files.append(path)
    prep = Preprocessing(32, 36, (0.5,) * 3, (0.25,) * 3)
    for policy in ("randaugment", "trivialaugment", "augmix", "autoaugment"):
        images = ImageFiles(files, [0] * 4, prep.transform((policy,)), 3, seed=7)
        first, again = [images[i][0] for i in range(4)], [images[i][0] for i in reversed(range(4))][::-1]
        assert all(torch.equal(a, b) for a, b in zip(first, again)), policy  # any order, any process
        plain = ImageFiles(files, [0] * 4, prep.transform(()), 3, seed=7)
        assert any(not torch.equal(a, plain[i][0]) for i, a in enumerate(first)), policy


@pytest.mark.parametrize("option, value", [
    ("--model-ema", "1.5"), ("--model-ema", "x"), ("--best-of", "ema"), ("--best-of", "newest"),
    ("--grad-accum-steps", "0"), ("--mixup", "-1"), ("--cutmix", "nan"), ("--mix-prob", "2"),
    ("--mix-switch-prob", "-0.1"), ("--auto-augment", "randomaug"), ("--checkpoint-every-steps", "-5"),
    ("--keep-checkpoints", "0"), ("--resume", "auto")])
def test_a_bad_value_of_each_new_option_is_a_one_line_error_with_status_2(option, value, capsys, tmp_path):
    try:  # a value of the wrong type is refused by the parser (SystemExit), a wrong value by the library
        code = main(["train", option, value, "--out-dir", str(tmp_path), "--epochs", "1", "--quiet"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err, err
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


def test_the_training_page_table_lists_every_training_option():
    page = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    missing = [f.name for f in fields(TrainConfig) if f"| `--{f.name.replace('_', '-')}` |" not in page]
    assert missing == []
