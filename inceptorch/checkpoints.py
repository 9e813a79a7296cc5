"""Step checkpoints (``--checkpoint-every-steps``): the resumable state inside an epoch, kept K deep.

A run folder holds ``last.state.pt`` (the state at the end of the last epoch) and, with step
checkpoints, ``checkpoints/step-NNNNNNNNN.state.pt``. Each is written whole to a temporary file and
renamed (``weights.write_atomically``), so a file with a final name is complete: a process killed while
writing leaves only a ``.tmp`` file, which is never read, and the previous checkpoint stays the newest.
The state carries every process's random state, so that a resumed run draws what the unbroken one drew.
"""

import io
import pickle
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import CheckpointError
from .weights import write_atomically

STEP_DIR = "checkpoints"


def step_file(run_dir, step: int) -> Path:
    return Path(run_dir) / STEP_DIR / f"step-{step:09d}.state.pt"


def step_files(run_dir) -> list[Path]:
    """The complete step checkpoints of a run folder, oldest first."""
    return sorted((Path(run_dir) / STEP_DIR).glob("step-*.state.pt"))


def write_state(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def save_step(run_dir, state: dict, keep: int) -> Path:
    """Writes the state of step ``state['step']``, then deletes all but the newest ``keep`` step files."""
    path = step_file(run_dir, state["step"])
    path.parent.mkdir(exist_ok=True)
    write_state(path, state)
    for old in step_files(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_state(path: Path) -> dict:
    """A state file, read without running any code (``weights_only``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:100]}): "
                              "the run cannot be resumed from it") from None


def newest_step_state(run_dir, than_step: int) -> dict | None:
    """The newest step checkpoint of a run folder if it is further than step ``than_step``, else None."""
    files = step_files(run_dir)
    if not files or int(files[-1].name.split("-")[1].split(".")[0]) <= than_step:
        return None
    return read_state(files[-1])


def saved_parts(parts: dict) -> dict:
    """The state dicts of the model, optimizer, schedule, loss scaler and EMA (None where there is none)."""
    return {name: part.state_dict() if part is not None else None for name, part in parts.items()}


def restore_parts(state: dict, parts: dict) -> tuple[list, int, dict | None]:
    """Loads what ``saved_parts`` saved (an EMA the saved run did not have starts from its weights);
    returns the metrics history, the finished epochs, and the position inside the next epoch, if any."""
    for name, part in parts.items():
        saved = state["model"] if name == "ema" and state.get("ema") is None else state.get(name)
        if part is not None and saved is not None:
            part.load_state_dict(saved)
    return state["history"], state["epoch"], state.get("partial")


def every_process(world: int, own: dict) -> list[dict]:
    """``own`` of every process, in rank order (a collective: every process calls it)."""
    if world == 1:
        return [own]
    every = [None] * world
    dist.all_gather_object(every, own)
    return every


def rng_state() -> dict:
    """This process's random state: the CPU's, and the GPU's where it is used."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])
