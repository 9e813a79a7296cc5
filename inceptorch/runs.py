"""The run folder: everything a training run leaves behind, each file written so that a crash never
leaves it torn.

``runs/<name>/`` holds config.json (the resolved options), metrics.csv and metrics.json (one row per
epoch), TensorBoard event files, curves.png, confusion.png and per_class.json (validation), train.log,
``last.safetensors`` and ``best.safetensors`` (weights with the metadata that ``load_model`` needs), and
``last.state.pt``: model, optimizer, scheduler and loss-scaler states, epoch and metrics history,
written last and atomically, so that it always describes a finished epoch. ``--resume`` reads it, or
the newest step checkpoint (``checkpoints``) where one is further on; with ``--model-ema``,
``ema.safetensors`` holds the averaged weights.
"""

import csv
import io
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

from . import checkpoints
from .config import AUTO_RESUME
from .errors import CheckpointError, ConfigError, TrainingError
from .weights import save_weights, write_atomically

log = logging.getLogger("inceptorch")

STATE_FILE = "last.state.pt"
PLOT_INTERVAL_S = 60


def _unused_name(out_dir: Path, base: str) -> str:
    if not (out_dir / base).exists():
        return base
    number = 2
    while (out_dir / f"{base}-{number}").exists():
        number += 1
    return f"{base}-{number}"


def new_run_dir(config) -> Path:
    """The folder a new run (or ensemble) writes: ``--name``, else MODEL-DATA numbered when taken;
    created, and checked to be writable before any training."""
    out_dir = Path(config.out_dir)
    if config.name and (out_dir / config.name).exists():
        raise ConfigError(f"run folder {out_dir / config.name} exists already: choose another "
                          f"--name, or continue it with --resume {out_dir / config.name}")
    data_name = Path(config.data).stem if config.data.endswith(".npz") else Path(config.data).name
    folder = out_dir / (config.name or _unused_name(out_dir, f"{config.model}-{data_name}"))
    _check_writable(folder)
    return folder


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write the run folder {folder} ({e.strerror}): choose another --out-dir")


class Run:
    """Writes one run folder. Only the main process of a distributed run has one."""

    def __init__(self, config):
        if config.resume:
            self.dir = Path(config.out_dir) / config.name if config.resume == AUTO_RESUME else Path(config.resume)
            for stale in [*self.dir.glob(".*.tmp"), *(self.dir / checkpoints.STEP_DIR).glob(".*.tmp")]:
                stale.unlink()  # a process killed while writing left them
            _check_writable(self.dir)
        else:
            self.dir = new_run_dir(config)
        saved = {**config.to_dict(), "resume": None}
        write_atomically(self.dir / "config.json", json.dumps(saved, indent=2).encode())
        self.log_handler = logging.FileHandler(self.dir / "train.log")
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self.log_handler)
        self._tensorboard = None
        self._plotted = time.monotonic()

    def log_epoch(self, history: list[dict]) -> None:
        """Rewrites metrics.csv and metrics.json from the whole history and adds the last epoch to
        TensorBoard; redraws curves.png a minute after its last drawing (drawing takes longer than a
        small epoch; ``finish`` draws the final one)."""
        columns = list(history[0])
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        with self._disk_errors(f"the metrics of epoch {history[-1]['epoch']}"):
            write_atomically(self.dir / "metrics.csv", text.getvalue().encode())
            write_atomically(self.dir / "metrics.json", json.dumps(history, indent=1).encode())
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.dir))
        last = history[-1]
        for key, value in last.items():
            if key != "epoch" and value is not None:  # val_* of an epoch --val-every skipped
                self._tensorboard.add_scalar(key.replace("_", "/", 1), value, last["epoch"])
        self._tensorboard.flush()
        if time.monotonic() - self._plotted > PLOT_INTERVAL_S:
            _plot_curves(history, self.dir / "curves.png")
            self._plotted = time.monotonic()

    def save_checkpoint(self, model, state: dict, metadata: dict, best: bool, ema=None, best_is_ema=False
                        ) -> None:
        """Weights (last, ema with ``ema``, and best when it improved: the raw weights or, with
        ``best_is_ema``, the averaged ones), then the resume state, which commits the epoch.

        A failed write (a full disk) leaves every file as it was before that write: the error says so.
        """
        with self._disk_errors(f"the checkpoint of epoch {state['epoch']}"):
            save_weights(model, self.dir / "last.safetensors", metadata)
            if ema is not None:
                save_weights(ema, self.dir / "ema.safetensors", {**metadata, "averaged": "ema"})
            if best:
                best_is_ema = best_is_ema and ema is not None
                save_weights(ema if best_is_ema else model, self.dir / "best.safetensors",
                             {**metadata, "averaged": "ema"} if best_is_ema else metadata)
            self.save_state(state)

    def save_step(self, state: dict, keep: int) -> None:
        """A step checkpoint (``--checkpoint-every-steps``), the newest ``keep`` of them kept."""
        with self._disk_errors(f"the checkpoint of step {state['step']}"):
            checkpoints.save_step(self.dir, state, keep)

    @contextmanager
    def _disk_errors(self, what: str):
        """A failed write (a full disk, a folder gone read-only) becomes one clear error."""
        try:
            yield
        except OSError as e:
            raise TrainingError(f"cannot write {what} in {self.dir} ({e.strerror or e}): free disk space or fix "
                                f"the folder, then continue with --resume {self.dir} (its last checkpoint is "
                                "intact)") from None

    def save_state(self, state: dict) -> None:
        """The resume state alone (Ctrl-C inside an epoch: the weights files keep the last whole epoch)."""
        checkpoints.write_state(self.dir / STATE_FILE, state)

    def finish(self, history: list[dict], report: dict | None) -> None:
        """The final curves.png, and per_class.json and confusion.png for the validation set (where
        there is one: no ``report`` with --val-split 0)."""
        _plot_curves(history, self.dir / "curves.png")
        if report is None:
            return
        write_atomically(self.dir / "per_class.json", json.dumps(report, indent=1).encode())
        _plot_confusion(report["confusion"], list(report["classes"]), self.dir / "confusion.png")

    def note(self, line: str) -> None:
        """Adds a line to train.log."""
        record = logging.makeLogRecord({"msg": line, "levelno": logging.INFO, "levelname": "INFO"})
        self.log_handler.handle(record)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        log.removeHandler(self.log_handler)
        self.log_handler.close()


def has_checkpoint(run_dir) -> bool:
    """Whether a run folder holds a complete checkpoint to resume from (an epoch's or a step's)."""
    return (Path(run_dir) / STATE_FILE).is_file() or bool(checkpoints.step_files(run_dir))


def load_state(run_dir) -> dict:
    """The newest resume state of a run folder, the last epoch's or a later step checkpoint, read without
    running any code (``weights_only``)."""
    if not has_checkpoint(run_dir):
        raise CheckpointError(f"{run_dir} has no checkpoint ({STATE_FILE}) to resume from: it ended before "
                              "its first epoch finished; start it again without --resume")
    path = Path(run_dir) / STATE_FILE
    epoch_state = checkpoints.read_state(path) if path.is_file() else None
    done = -1 if epoch_state is None else epoch_state.get("step", -1)
    return checkpoints.newest_step_state(run_dir, done) or epoch_state


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*args, **kwargs)


def _save_figure(plt, figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    write_atomically(path, buffer.getvalue())


def _plot_curves(history: list[dict], path: Path) -> None:
    plt, figure, (loss_axes, acc_axes) = _figure(1, 2, figsize=(10, 4))
    for key, axes in (("loss", loss_axes), ("acc", acc_axes)):
        for split in ("train", "val"):
            scored = [row for row in history if row[f"{split}_{key}"] is not None]  # see --val-every
            if not scored:
                continue  # --val-split 0: nothing validated
            axes.plot([row["epoch"] for row in scored], [row[f"{split}_{key}"] for row in scored], marker="o",
                      label=f"{split} {key}")
        axes.set_xlabel("epoch")
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    _save_figure(plt, figure, path)


def _plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    n = len(classes)
    side = min(16, 2 + 0.5 * n)
    plt, figure, axes = _figure(figsize=(side + 1.5, side))
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes)
    if n <= 30:
        axes.set_xticks(range(n), classes, rotation=60, ha="right")
        axes.set_yticks(range(n), classes)
        peak = max(max(row) for row in confusion) or 1
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                axes.text(j, i, count, ha="center", va="center", fontsize=8,
                          color="white" if count > peak / 2 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("validation confusion matrix")
    figure.tight_layout()
    _save_figure(plt, figure, path)
