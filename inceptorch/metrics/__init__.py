"""Inception as a metric: FID, KID and the Inception Score as pytorch-fid, torch-fidelity and clean-fid
compute them, on the FID Inception (``inception_v3_fid``) and the project's fast CPU path."""

from .formulas import frechet_distance, kernel_inception_distance
from .inputs import MODES
from .scores import Scores, Settings, compute, feature_statistics, fid, inception_score, kid
from .statsfiles import load_statistics, save_statistics

__all__ = ["MODES", "Scores", "Settings", "compute", "feature_statistics", "fid", "frechet_distance",
           "inception_score", "kernel_inception_distance", "kid", "load_statistics", "save_statistics"]
