"""What a network declares to run its rollout inference in numpy (algo/inference.py): its linear
layers, their activation and its distribution head. A network with no spec acts with torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

Linear = tuple[np.ndarray, np.ndarray]  # (W [in, out], b [out]): x @ W + b


@dataclass
class MirrorSpec:
    """A network's maths as numpy can run it: ``trunk`` (shared layers, each followed by the
    activation), then a policy tower and a value tower (activation between their layers, none
    after the last). The policy tower's output is the distribution head."""

    trunk: list[Linear]
    policy: list[Linear]
    value: list[Linear]
    activation: str
    distribution: str  # "gaussian" (head = mean, or [mean | log_std]) or "categorical" (head = logits)
    log_std: Optional[np.ndarray] = None  # a state-independent Gaussian's log-std, already clamped
    log_std_bounds: tuple[float, float] = (-20.0, 2.0)  # clamp for a state-dependent log-std
    # A state-dependent std's transform of the head's second half: log(exp(raw) + std_min)
    # ("exp"; raw itself when std_min = 0) or log(softplus(raw) + std_min) ("softplus").
    std_param: str = "exp"
    std_min: float = 0.0
    squash: Optional[str] = None  # "tanh": action = tanh(Gaussian sample), log-prob as TanhGaussian's
