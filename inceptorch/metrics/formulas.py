"""The arithmetic of FID, KID and the Inception Score, each as the reference tool does it.

- FID, pytorch-fid's way (also clean-fid's): ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)),
  with scipy's ``sqrtm``; where the square root is not finite, eps = 1e-6 is added to both diagonals
  and it is taken again; an imaginary part is dropped when the diagonal's is below 1e-3, else an error.
- FID, torch-fidelity's way: the trace of the square root as the sum of the square roots of the
  eigenvalues of S1 S2 (complex, real part kept), no eps and no check.
- FID, the approximate paths' way (``fast=True``): the same eigenvalues from the symmetric matrix
  sqrt(S1) S2 sqrt(S1), by two symmetric eigendecompositions (negative rounding clipped to 0): about 2 s
  at 2,048 features on two cores where ``sqrtm`` takes 10-14 s, a fixed cost as large as the network's
  time on a few hundred images. Its difference from ``sqrtm`` is rounding (``tests/test_metrics.py``).
- KID (Binkowski et al. 2018) as torch-fidelity computes it: ``subsets`` random subsets of
  ``subset_size`` features of each side (numpy's RandomState(seed), without replacement), the
  unbiased MMD^2 of the cubic polynomial kernel (x.y / d + 1)^3 on float32 features; mean and
  standard deviation over the subsets.
- Inception Score (Salimans et al. 2016) as torch-fidelity computes it: logits shuffled by
  RandomState(seed), in float64, cut into ``splits`` parts; exp(mean KL(p(y|x) || p(y))) of each part;
  mean and standard deviation over the parts.
"""

import logging
import warnings

import numpy as np
import torch
from scipy import linalg

from ..errors import DataError

log = logging.getLogger("inceptorch")

FID_EPS = 1e-6  # pytorch-fid's offset on the diagonals when sqrtm fails
IMAGINARY_TOLERANCE = 1e-3  # pytorch-fid's largest imaginary part accepted on sqrtm's diagonal


def frechet_distance(mu1, sigma1, mu2, sigma2, mode: str = "pytorch-fid", fast: bool = False) -> float:
    """FID between two Gaussians by ``mode``'s arithmetic (``torch-fidelity``: eigenvalues; else sqrtm);
    ``fast``: the trace of the square root from symmetric eigendecompositions (the approximate paths)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DataError(f"the two statistics have {mu1.shape[0]} and {mu2.shape[0]} features: compute both "
                        "with the same --dims")
    if mode == "torch-fidelity":
        mu1, mu2 = mu1.astype(np.float32), mu2.astype(np.float32)  # torch-fidelity's means are float32
    diff = mu1 - mu2
    if fast:
        trace_sqrt = _trace_sqrt_symmetric(sigma1, sigma2)
    elif mode == "torch-fidelity":
        trace_sqrt = np.sum(np.sqrt(np.linalg.eigvals(sigma1.dot(sigma2)).astype("complex128")).real)
    else:
        trace_sqrt = np.trace(_sqrtm_of_product(sigma1, sigma2))
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def _trace_sqrt_symmetric(sigma1, sigma2) -> float:
    """tr(sqrtm(S1 S2)) for symmetric positive semi-definite S1, S2: S1 S2 and R S2 R, with R = sqrt(S1),
    have the same eigenvalues, and R S2 R is symmetric, so ``eigh`` and ``eigvalsh`` suffice."""
    values, vectors = np.linalg.eigh(sigma1)
    root = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    return float(np.sqrt(np.linalg.eigvalsh(root @ sigma2 @ root).clip(min=0)).sum())


def _sqrtm(matrix):
    with warnings.catch_warnings():  # scipy's "matrix is singular": the checks below decide, as pytorch-fid's
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def _sqrtm_of_product(sigma1, sigma2):
    root = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(root).all():
        log.warning("the product of the covariances is singular: adding %g to their diagonals, as pytorch-fid "
                    "does", FID_EPS)
        offset = np.eye(sigma1.shape[0]) * FID_EPS
        root = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise DataError(f"the square root of the covariances' product has an imaginary part of "
                            f"{np.max(np.abs(root.imag)):.3g}: the statistics are degenerate (too few images "
                            "for --dims?)")
        root = root.real
    return root


def _unbiased_mmd2(features1: np.ndarray, features2: np.ndarray) -> float:
    """Unbiased MMD^2 of the kernel (x.y / d + 1)^3: within-set means leave the diagonal out."""
    scale = 1.0 / features1.shape[1]
    k11 = (features1 @ features1.T * scale + 1) ** 3
    k22 = (features2 @ features2.T * scale + 1) ** 3
    k12 = (features1 @ features2.T * scale + 1) ** 3
    m = k11.shape[0]
    within1 = (k11.sum(axis=1) - np.diagonal(k11)).sum()
    within2 = (k22.sum(axis=1) - np.diagonal(k22)).sum()
    return (within1 + within2) / (m * (m - 1)) - 2 * k12.sum(axis=0).sum() / (m * m)


def kernel_inception_distance(features1, features2, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 2020) -> tuple[float, float]:
    """KID's mean and standard deviation over ``subsets`` subsets (torch-fidelity's arithmetic)."""
    features1 = np.asarray(features1, dtype=np.float32)
    features2 = np.asarray(features2, dtype=np.float32)
    smallest = min(len(features1), len(features2))
    if subset_size > smallest:
        raise DataError(f"KID's subset size {subset_size} is larger than the {smallest} images of the smaller "
                        f"side: pass --kid-subset-size {smallest} or less")
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for i in range(subsets):
        pick1 = features1[rng.choice(len(features1), subset_size, replace=False)]
        pick2 = features2[rng.choice(len(features2), subset_size, replace=False)]
        values[i] = _unbiased_mmd2(pick1, pick2)
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """The Inception Score's mean and standard deviation over ``splits`` parts (torch-fidelity's arithmetic)."""
    logits = torch.as_tensor(logits)
    n = logits.shape[0]
    if n < splits:
        raise DataError(f"the Inception Score of {n} images cannot be cut into {splits} parts: pass more images "
                        f"or --isc-splits {max(n, 1)}")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n), :]
    logits = logits.double()
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        marginal = p[part].mean(dim=0, keepdim=True)
        kl = (p[part] * (log_p[part] - marginal.log())).sum(dim=1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
