"""MixUp and CutMix of a training batch (``--mixup ALPHA --cutmix ALPHA``), with timm's batch mode.

As timm's ``Mixup(mode="batch")``: with probability ``--mix-prob`` a batch is mixed; with both alphas
set, CutMix is chosen with probability ``--mix-switch-prob``; the mixing weight comes from
Beta(alpha, alpha); CutMix's weight is corrected to the area actually pasted. Each image is mixed with
the image at the mirrored position of the GLOBAL batch (for one process, timm's ``x.flip(0)``), and
the draws are a function of (seed, epoch, batch): a run mixes the same pairs with the same weights
for any number of processes and on resume.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
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

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int | tuple[int, ...],
                 rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of the mixed global batch and its targets, class probabilities summing
        to one per image. ``seed``: for instance (run seed, epoch, batch), numpy's SeedSequence entropy;
        ``rank``, ``world``: which share of the global batch ``x`` is (``data.shard``'s)."""
        rng = np.random.default_rng(seed)
        lam, cut = self.draw(rng)  # the same on every process: a function of the seed alone
        own = F.one_hot(y, num_classes).float()
        if lam == 1.0:
            return x, own
        # timm flips each process's own share, so the pairs (and the run) would change with the number of
        # processes; the global batch's mirror keeps them, at the cost of one exchange with one peer
        partner_x, partner_y = mirrored_rows(x, rank, world), mirrored_rows(y, rank, world)
        if cut:
            x, lam = _paste_box(x, partner_x, lam, rng)
        else:
            x = x * lam + partner_x * (1 - lam)
        return x, own * lam + F.one_hot(partner_y, num_classes).float() * (1 - lam)


def mirrored_rows(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The rows of the global batch's mirror image that pair with this process's rows.

    Process r holds the global rows r, r + W, r + 2W, ... (``data.shard``), n / W of them: global row
    jW + r pairs with row n - 1 - (jW + r) = (n/W - 1 - j)W + (W - 1 - r), which is process W - 1 - r's
    row n/W - 1 - j. So the partners are that one peer's rows in reverse order (its own, for the middle
    process of an odd W)."""
    peer = world - 1 - rank
    if peer == rank:
        return tensor.flip(0)
    received = torch.empty_like(tensor, memory_format=torch.contiguous_format)
    exchange = [dist.P2POp(dist.isend, tensor.contiguous(), peer), dist.P2POp(dist.irecv, received, peer)]
    for request in dist.batch_isend_irecv(exchange):
        request.wait()
    return received.flip(0)


def _paste_box(x: torch.Tensor, partner: torch.Tensor, lam: float, rng: np.random.Generator
               ) -> tuple[torch.Tensor, float]:
    """CutMix: a box of about (1 - lam) of the area, centred anywhere (clipped at the borders), taken
    from the partner images; the weight returned is 1 - the area actually pasted."""
    h, w = x.shape[-2:]
    side = math.sqrt(1 - lam)
    cut_h, cut_w = int(h * side), int(w * side)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    return x, 1 - (bottom - top) * (right - left) / (h * w)
