"""FID, KID and IS against the reference tools themselves: pytorch-fid, torch-fidelity and clean-fid.

The real weights file cannot be fetched here, so one random-weight file (``randomize_``: activations
near unit scale) is planted in a temporary TORCH_HOME under pytorch-fid's and torch-fidelity's file
names: every tool loads the same weights. Images are real (``INCEPTORCH_DATA``): cat and dog photos
of mixed sizes and CIFAR-10 JPEGs, a few dozen per test; ``dims=64`` where the depth does not matter,
since it runs the stem only.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cleanfid.resize import make_resizer
from inception_reference import randomize_
from pytorch_fid import fid_score
from pytorch_fid.inception import InceptionV3 as PytorchFidInception
from pytorch_fid.inception import fid_inception_v3
from torch_fidelity import calculate_metrics
from torch_fidelity.defaults import DEFAULTS as FIDELITY_DEFAULTS
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from inceptorch import create_model, hub, metrics
from inceptorch.cli import main
from inceptorch.metrics.extractor import DEPTHS
from inceptorch.metrics.inputs import clean_resize, decode, tf1_bilinear
from inceptorch.models import default_cfg

FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME holding one random-weight FID Inception under both libraries' file names."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    generator_state = torch.get_rng_state()
    torch.manual_seed(2015)
    reference = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    torch.save(randomize_(reference).state_dict(), checkpoints / FID_FILE)
    torch.set_rng_state(generator_state)
    shutil.copy(checkpoints / FID_FILE, checkpoints / FIDELITY_FILE)
    return home


@pytest.fixture(autouse=True)
def _planted_weights(torch_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # each test its own statistics cache
    monkeypatch.delenv("INCEPTORCH_WEIGHTS_URL", raising=False)


def _linked(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for file in files:
        (folder / file.name).symlink_to(file)
    return folder


@pytest.fixture(scope="session")
def cifar(tmp_path_factory) -> tuple[Path, Path]:
    """Two folders of 100 CIFAR-10 JPEGs each: cats and dogs."""
    root = os.environ.get("INCEPTORCH_DATA")
    if not root:
        pytest.skip("real data not available: set INCEPTORCH_DATA to the data folder (for instance ../shared/data)")
    base = tmp_path_factory.mktemp("cifar")
    return tuple(_linked(base / name, sorted((Path(root) / "cifar10" / "train" / name).glob("*.jpg"))[:100])
                 for name in ("cat", "dog"))


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Eight cat and dog photos, no two of the same size."""
    root = os.environ.get("INCEPTORCH_DATA")
    if not root:
        pytest.skip("real data not available: set INCEPTORCH_DATA to the data folder (for instance ../shared/data)")
    files = [f for kind in ("cat", "dog") for f in sorted((Path(root) / "cats_vs_dogs" / "train" / kind).glob("*.jpg"))[:4]]
    assert len({tuple(decode(f).shape) for f in files}) == len(files)
    return files


def _pytorch_fid_features(files, dims) -> np.ndarray:
    model = PytorchFidInception([PytorchFidInception.BLOCK_INDEX_BY_DIM[dims]])
    return fid_score.get_activations(files, model, batch_size=1, dims=dims, num_workers=0)


def _features(files, dims, mode="pytorch-fid"):
    scores_source = metrics.inputs.image_source(files)
    extractor = metrics.extractor.fid_inception(dims)
    collected = metrics.collect.collect(scores_source, extractor, mode=mode, dims=dims, keep_features=True,
                                        progress=False)
    return collected.features


def test_fid_inception_logits_equal_pytorch_fids_network(torch_home):
    reference = fid_inception_v3().eval()  # its layout patched onto torchvision's, weights from TORCH_HOME
    ours = create_model("inception_v3_fid", pretrained=True).eval()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-4
    assert ours.num_classes == 1008 and not ours.has_aux


@pytest.mark.realdata
@pytest.mark.parametrize("dims", DEPTHS)
def test_features_equal_pytorch_fid_at_batch_size_1_on_photos_of_mixed_sizes(photos, dims):
    assert np.abs(_features(photos, dims) - _pytorch_fid_features(photos, dims)).max() <= 1e-4


@pytest.mark.realdata
def test_openvino_path_pads_the_last_batch_to_one_shape_and_drops_the_padding(photos):
    pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    files = photos[:7]  # batches of 4: the second has 3 images and is padded
    extractor = metrics.extractor.fid_inception(64, backend="openvino", batch_size=4)
    shapes = []

    def recording(x):
        shapes.append(tuple(x.shape))
        return extractor(x)

    collected = metrics.collect.collect(metrics.inputs.image_source(files), recording, mode="pytorch-fid", dims=64,
                                        batch_size=4, keep_features=True, progress=False, fixed_batch=True)
    assert shapes == [(4, 3, 299, 299)] * 2 and collected.count == 7
    assert np.abs(collected.features - _pytorch_fid_features(files, 64)).max() <= 1e-4


@pytest.mark.realdata
def test_features_equal_pytorch_fid_on_cifar_jpegs(cifar):
    files = sorted(cifar[0].iterdir())[:12]
    assert np.abs(_features(files, 2048) - _pytorch_fid_features(files, 2048)).max() <= 1e-4


@pytest.mark.realdata
def test_fid_command_prints_pytorch_fids_value(cifar, capsys):
    reference = fid_score.calculate_fid_given_paths([str(p) for p in cifar], 50, "cpu", 64, num_workers=0)
    assert main(["fid", str(cifar[0]), str(cifar[1]), "--dims", "64"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("FID: ")
    assert float(line.split()[1]) == pytest.approx(reference, rel=1e-5)


@pytest.mark.realdata
def test_statistics_files_round_trip_with_pytorch_fid(cifar, tmp_path):
    a, b = (str(p) for p in cifar)
    ours = tmp_path / "ours.npz"
    assert main(["fid", a, "--dims", "64", "--save-stats", str(ours)]) == 0
    theirs = tmp_path / "theirs.npz"
    fid_score.save_fid_stats([a, str(theirs)], 50, "cpu", 64, num_workers=0)
    direct = metrics.fid(a, b, dims=64, progress=False)
    # pytorch-fid reads our file; we read pytorch-fid's
    assert fid_score.calculate_fid_given_paths([str(ours), b], 50, "cpu", 64, num_workers=0) == pytest.approx(
        direct, rel=1e-5)
    assert metrics.fid(str(theirs), b, dims=64, progress=False) == pytest.approx(direct, rel=1e-5)


@pytest.mark.realdata
def test_torch_fidelity_mode_gives_torch_fidelitys_fid_kid_and_is(cifar, tmp_path):
    # 40 images a side: torch-fidelity runs the whole network on both for IS's logits
    a, b = (str(_linked(tmp_path / p.name, sorted(p.iterdir())[:40])) for p in cifar)
    reference = calculate_metrics(
        input1=a, input2=b, fid=True, kid=True, isc=True, cuda=False, cache=False, verbose=False,
        feature_layer_fid="64", feature_layer_kid="64", kid_subsets=10, kid_subset_size=20)
    ours = metrics.compute(a, b, fid=True, kid=True, isc=True, mode="torch-fidelity", dims=64, kid_subsets=10,
                           kid_subset_size=20, progress=False)
    assert ours.fid == pytest.approx(reference["frechet_inception_distance"], rel=1e-4)
    assert ours.kid[0] == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
    assert ours.kid[1] == pytest.approx(reference["kernel_inception_distance_std"], rel=1e-3, abs=1e-6)
    assert ours.isc[0] == pytest.approx(reference["inception_score_mean"], rel=1e-4)
    assert ours.isc[1] == pytest.approx(reference["inception_score_std"], rel=1e-3, abs=1e-6)


def test_kid_and_is_arithmetic_equal_torch_fidelitys_on_the_same_features():
    generator = np.random.RandomState(0)
    first, second = generator.rand(120, 64).astype(np.float32), generator.rand(90, 64).astype(np.float32) + 0.1
    theirs = kid_features_to_metric(torch.from_numpy(first), torch.from_numpy(second), kid_subsets=20,
                                    kid_subset_size=40, verbose=False, rng_seed=7,
                                    **{k: v for k, v in FIDELITY_DEFAULTS.items() if k.startswith("kid_kernel")})
    assert metrics.kernel_inception_distance(first, second, 20, 40, seed=7) == pytest.approx(
        (theirs["kernel_inception_distance_mean"], theirs["kernel_inception_distance_std"]), rel=1e-5)
    logits = torch.from_numpy(generator.randn(100, 1008).astype(np.float32) * 3)
    theirs = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=3)
    assert metrics.formulas.inception_score(logits, 10, seed=3) == pytest.approx(
        (theirs["inception_score_mean"], theirs["inception_score_std"]), rel=1e-9)


@pytest.mark.parametrize("images", [300, 40], ids=["full-rank", "singular"])
def test_fast_fid_arithmetic_equals_pytorch_fids_sqrtm(images):
    """The approximate paths' symmetric-eigenvalue trace against pytorch-fid's own sqrtm arithmetic, on a
    full-rank pair of covariances and on a singular one (fewer images than features)."""
    generator = np.random.RandomState(1)
    first = generator.rand(images, 64) @ generator.randn(64, 64)
    second = (generator.rand(images, 64) + 0.05) @ generator.randn(64, 64)
    statistics = (first.mean(0), np.cov(first, rowvar=False), second.mean(0), np.cov(second, rowvar=False))
    assert metrics.formulas.frechet_distance(*statistics, fast=True) == pytest.approx(
        fid_score.calculate_frechet_distance(*statistics), rel=1e-8)


@pytest.mark.realdata
def test_clean_mode_resizes_as_clean_fid_and_torch_fidelity_mode_as_torch_fidelity(photos):
    resizer = make_resizer("PIL", False, "bicubic", (299, 299))
    for file in photos[:3]:
        pixels = decode(file)
        assert np.array_equal(clean_resize(pixels.permute(1, 2, 0).numpy()),
                              resizer(pixels.permute(1, 2, 0).numpy()))
        theirs = interpolate_bilinear_2d_like_tensorflow1x(pixels[None].float(), size=(299, 299), align_corners=False)
        assert (tf1_bilinear(pixels.float()) - theirs[0]).abs().max() <= 1e-3


@pytest.mark.realdata
def test_tensors_give_the_statistics_of_the_files_they_came_from(photos):
    tensors = [decode(f) for f in photos[:4]]
    from_files = metrics.feature_statistics(photos[:4], dims=64, progress=False)
    from_tensors = metrics.feature_statistics(tensors, dims=64, progress=False)
    float_batch = metrics.feature_statistics([t.float() / 255 for t in tensors], dims=64, progress=False)
    assert from_files[2] == from_tensors[2] == float_batch[2] == 4
    assert np.abs(from_files[0] - from_tensors[0]).max() == 0
    assert np.abs(from_files[0] - float_batch[0]).max() <= 1e-6


@pytest.mark.realdata
def test_statistics_cache_is_reused_and_invalidated_when_a_file_changes(photos, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for file in photos[:3]:
        shutil.copy(file, folder / file.name)
    first = metrics.feature_statistics(folder, dims=64, progress=False)
    entries = list((tmp_path / "cache" / "inceptorch" / "fid_statistics").glob("*.npz"))
    assert len(entries) == 1
    # A marked entry proves the next call reads the cache rather than the images.
    metrics.save_statistics(entries[0], first[0] + 1000, first[1], first[2])
    assert metrics.feature_statistics(folder, dims=64, progress=False)[0][0] == first[0][0] + 1000
    assert metrics.feature_statistics(folder, dims=64, progress=False, cache=False)[0][0] == first[0][0]
    changed = next(folder.iterdir())
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert metrics.feature_statistics(folder, dims=64, progress=False)[0][0] == first[0][0]


@pytest.mark.realdata
def test_statistics_cache_keeps_the_entries_used_last(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.statsfiles, "CACHE_ENTRIES", 2)
    cache = tmp_path / "cache" / "inceptorch" / "fid_statistics"
    folders = [_linked(tmp_path / name, [photo]) for name, photo in zip("abc", photos)]

    def statistics(folder):
        before = set(cache.glob("*.npz"))
        mu = metrics.feature_statistics(folder, dims=64, progress=False)[0]
        return mu, set(cache.glob("*.npz")) - before

    mu_a, (entry_a,) = statistics(folders[0])
    metrics.save_statistics(entry_a, mu_a + 1000, np.eye(64))  # marked: a read of the cache shows it
    _, (entry_b,) = statistics(folders[1])
    assert statistics(folders[0])[0][0] == mu_a[0] + 1000  # a is read from the cache, so used after b
    _, (entry_c,) = statistics(folders[2])
    assert not entry_b.exists() and set(cache.glob("*.npz")) == {entry_a, entry_c}


@pytest.mark.realdata
def test_corrupt_image_is_skipped_with_a_warning_and_strict_stops(photos, tmp_path, caplog, capsys):
    folder = _linked(tmp_path / "images", photos[:3])
    (folder / "broken.png").write_bytes(b"not a png at all")
    mu, _, count = metrics.feature_statistics(folder, dims=64, progress=False)
    assert count == 3 and np.isfinite(mu).all()
    assert "broken.png" in caplog.text and "1 of the 4 files" in caplog.text
    capsys.readouterr()
    assert main(["fid", str(folder), str(folder), "--dims", "64", "--strict", "--no-cache"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.png" in errors[0] and "--strict" in errors[0]


@pytest.mark.realdata
def test_fewer_images_than_features_warn_of_a_singular_covariance(photos, caplog):
    value = metrics.fid(photos[:4], photos[4:], dims=64, progress=False)
    assert np.isfinite(value) and "singular covariance" in caplog.text


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["fid", str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no image files" in err


def test_offline_with_an_empty_cache_names_the_url_and_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    folder = tmp_path / "images"
    folder.mkdir()
    torchvision.io.write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "a.png"))
    assert main(["fid", str(folder), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_FILE}" in err
    assert str(tmp_path / "empty_home" / "hub" / "checkpoints" / FID_FILE) in err


def test_weights_are_found_under_torch_fidelitys_file_name_too(torch_home, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / FIDELITY_FILE).symlink_to(torch_home / "hub" / "checkpoints" / FID_FILE)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    assert hub.weights_file(default_cfg("inception_v3_fid")).name == FIDELITY_FILE


@pytest.mark.slow
@pytest.mark.realdata
def test_torchrun_gives_the_statistics_of_one_process(cifar, tmp_path):
    files = sorted(cifar[0].iterdir())[:21]
    folder = _linked(tmp_path / "images", files)
    alone = metrics.feature_statistics(folder, dims=64, progress=False, cache=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "pair.npz"
    run = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "inceptorch.cli", "fid",
                          str(folder), "--dims", "64", "--no-cache", "--save-stats", str(out)], check=False, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    mu, sigma, count, _ = metrics.load_statistics(out)
    assert count == alone[2] == 21
    assert np.abs(mu - alone[0]).max() <= 1e-6 and np.abs(sigma - alone[1]).max() <= 1e-6


@pytest.mark.slow
@pytest.mark.realdata
def test_torchrun_gives_the_kid_and_is_of_one_process(cifar, tmp_path):
    # odd counts: the two processes' shards differ in size, and IS's shuffle and KID's subsets read the
    # gathered rows by position, so any disorder in the gather would change both values
    a = _linked(tmp_path / "a", sorted(cifar[0].iterdir())[:21])
    b = _linked(tmp_path / "b", sorted(cifar[1].iterdir())[:17])
    options = ["--dims", "64", "--kid-subsets", "5", "--kid-subset-size", "12", "--isc-splits", "3", "--no-cache"]
    alone = metrics.compute(a, b, fid=False, kid=True, isc=True, dims=64, kid_subsets=5, kid_subset_size=12,
                            isc_splits=3, cache=False, progress=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    run = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "inceptorch.cli", "metrics",
                          str(a), str(b), "--kid", "--isc", *options], check=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    printed = dict(line.split(": ", 1) for line in run.stdout.splitlines() if line.startswith(("KID: ", "IS: ")))
    kid, isc = (tuple(float(v) for v in printed[name].split(" ± ")) for name in ("KID", "IS"))
    assert kid == pytest.approx(alone.kid, rel=1e-5, abs=1e-9)  # printed to 7 significant digits
    assert isc == pytest.approx(alone.isc, rel=1e-5)
