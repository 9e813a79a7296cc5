"""Loading a checkpoint into a model: foreign layouts fitted to ours, or one clear error.

inceptorch models keep the key names of the layout they follow (torchvision's or timm's), so a
reference state dict loads key for key; what differs is handled here: heads for another number of
classes (or none: ``num_classes=0``), switched-off aux heads, layers and heads a ``features_only``
model left out, aux heads a checkpoint lacks or never trained (started fresh, with a notice), and a
first convolution for another number of input channels.
"""

import logging
from pathlib import Path

from ..errors import CheckpointError
from ..weights import is_safetensors, read_metadata, read_state_dict
from .layers import adapt_first_conv_weight

log = logging.getLogger("inceptorch")


def _module_of(key: str, modules) -> str | None:
    return next((m for m in modules if key == m or key.startswith(m + ".")), None)


def load_weights(model, path, untrained: tuple[str, ...] = ()) -> None:
    """Loads a checkpoint into ``model`` exactly, or raises ``CheckpointError`` naming the first mismatches.

    ``untrained``: heads the checkpoint carries but that were never trained; they start fresh.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    file = Path(path).name

    # Aux heads that this model has switched off, heads left out (num_classes=0) and layers a
    # features_only model has no use for (prune_intermediate_layers): not needed.
    heads = model.present_head_layers() if hasattr(model, "present_head_layers") else []
    unused = [a for a in getattr(model, "aux_heads", ()) if getattr(model, a, None) is None]
    unused += getattr(model, "pruned", [])
    unused += [h for h in heads if not any(True for _ in model.get_submodule(h).parameters())]
    state = {k: v for k, v in state.items() if _module_of(k, unused) is None}

    # Aux heads that are on but that the checkpoint lacks or never trained: they start as the model's own.
    aux_on = [a for a in getattr(model, "aux_heads", ()) if getattr(model, a, None) is not None]
    lacking = [a for a in aux_on if not any(_module_of(k, [a]) for k in state)]
    restarted = [a for a in aux_on if a in untrained]
    state = {k: v for k, v in state.items() if _module_of(k, restarted) is None}
    state.update({k: v for k, v in expected.items() if _module_of(k, lacking + restarted)})

    # A first convolution made for RGB, loaded into a model for another number of channels.
    for key, value in list(state.items()):
        want = expected.get(key)
        if (want is not None and value.dim() == 4 and value.shape[1] == 3 and want.shape[1] != 3
                and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]):
            state[key] = adapt_first_conv_weight(value, want.shape[1])

    # Heads for another number of classes: keep the backbone, start the heads afresh.
    fresh = [k for k, v in state.items()
             if _module_of(k, heads) and k in expected and v.shape != expected[k].shape]
    checkpoint_classes = state[fresh[0]].shape[0] if fresh else None
    fresh_modules = {_module_of(k, heads) for k in fresh}
    state = {k: v for k, v in state.items() if _module_of(k, fresh_modules) is None}
    state.update({k: v for k, v in expected.items() if _module_of(k, fresh_modules)})

    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    # Named in a stable order: safetensors hands its tensors back in no particular order.
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        made_for = read_metadata(path).get("model") if is_safetensors(Path(path)) else None
        parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("wrong shapes", wrong_shape)) if items]
        origin = f" (it was saved from {made_for})" if made_for else ""
        raise CheckpointError(f"{Path(path).name} does not fit {name}{origin}: {'; '.join(parts)}: "
                              "use a checkpoint of the same architecture and options")
    # Notices only once the backbone is known to fit, so that a wrong checkpoint gets one clear error.
    if lacking:
        log.warning("%s has no weights for the aux head%s %s of %s: %s start%s fresh", file,
                    "s" * (len(lacking) > 1), ", ".join(lacking), name, "they" if len(lacking) > 1 else "it",
                    "" if len(lacking) > 1 else "s")
    if restarted:
        log.warning("%s: the aux heads %s in this file were never trained (torchvision says so): they start "
                    "fresh", file, ", ".join(restarted))
    if fresh:
        log.warning("%s: checkpoint heads have %d classes, the model has %d: keeping the backbone, "
                    "training fresh heads", file, checkpoint_classes, model.num_classes)
    model.load_state_dict(state, strict=False)
