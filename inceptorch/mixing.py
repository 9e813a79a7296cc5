"""MixUp and CutMix of a training batch (``--mixup ALPHA --cutmix ALPHA``), with timm's batch mode.

As timm's ``Mixup(mode="batch")``: with probability ``--mix-prob`` a batch is mixed; with both alphas
set, CutMix is chosen with probability ``--mix-switch-prob``; the mixing weight comes from
Beta(alpha, alpha); each image is mixed with the image at the mirrored position of the batch
(``x.flip(0)``); CutMix's weight is corrected to the area actually pasted. The draws are a function of
(seed, epoch, batch), so a resumed run mixes as the unbroken one did. Under torchrun each process mixes
its own share of the global batch, as timm's does, so the pairs depend on the number of processes.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Mixing:
    mixup: float = 0.0  # Beta alpha of MixUp (0: off)
    cutmix: float = 0.0  # Beta alpha of CutMix (0: off)
    prob: float = 1.0
    switch_prob: float = 0.5

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(weight of the batch's own images, whether CutMix) for one batch; weight 1: not mixed."""
        if rng.random() >= self.prob:
            return 1.0, False
        cut = self.cutmix > 0 and (self.mixup == 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix if cut else self.mixup
        return float(rng.beta(alpha, alpha)), cut

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int | tuple[int, ...]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its targets, class probabilities summing to one per image. ``seed``: for
        instance (run seed, epoch, batch), numpy's SeedSequence entropy."""
        rng = np.random.default_rng(seed)
        lam, cut = self.draw(rng)
        if lam < 1.0 and cut:
            x, lam = _paste_box(x, lam, rng)
        elif lam < 1.0:
            x = x * lam + x.flip(0) * (1 - lam)
        own = F.one_hot(y, num_classes).float()
        return x, own * lam + own.flip(0) * (1 - lam)


def _paste_box(x: torch.Tensor, lam: float, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """CutMix: a box of about (1 - lam) of the area, centred anywhere (clipped at the borders), taken
    from the mirrored batch; the weight returned is 1 - the area actually pasted."""
    h, w = x.shape[-2:]
    side = math.sqrt(1 - lam)
    cut_h, cut_w = int(h * side), int(w * side)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
    return x, 1 - (bottom - top) * (right - left) / (h * w)
