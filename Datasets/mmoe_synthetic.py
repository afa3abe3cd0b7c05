"""The MMoE paper's synthetic two-task regression data with a controlled task correlation.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018, §3.2 (synthetic data generation):

1. draw two orthogonal unit vectors u1, u2 in R^d;
2. with a scale c and a correlation score -1 <= p <= 1, set w1 = c u1 and
   w2 = c (p u1 + sqrt(1-p^2) u2), so cos(w1, w2) = p;
3. draw inputs x in R^d with i.i.d. N(0, 1) entries;
4. y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k,  eps_k ~ N(0, 0.01),
   with the same sinusoid parameters alpha_i, beta_i for both tasks.

The paper sets c = 1, m = 10, d = 100. The Pearson correlation of the two labels rises monotonically
with p (the paper's Fig. 2), which is what makes p a knob for "task relatedness".
NOTE: the paper calls alpha_i, beta_i "given parameters"; here they are drawn once from N(0, 1) from
the seed, as the common public re-implementations do. eps ~ N(0, 0.01) is read as variance 0.01.
Vectorised: one matrix product and one (N, m) sine, no Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MultiTaskRegression:
    x: torch.Tensor  # (N, d) float32
    y: torch.Tensor  # (N, 2) float32: the two tasks' labels
    w: torch.Tensor  # (2, d) the task weight vectors; cos(w[0], w[1]) = correlation
    correlation: float

    def label_pearson(self) -> float:
        """Pearson correlation between the two tasks' labels (the paper's Fig. 2 y-axis)."""
        return float(np.corrcoef(self.y[:, 0].numpy(), self.y[:, 1].numpy())[0, 1])


def make_task_weights(d: int, correlation: float, c: float = 1.0,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """(2, d) weight vectors with cosine similarity exactly `correlation` and norm c (steps 1–2)."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation}")
    if d < 2:
        raise ValueError(f"need d >= 2 for two orthogonal vectors, got {d}")
    rng = rng or np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))  # two orthonormal columns
    u1, u2 = q[:, 0], q[:, 1]
    w1 = c * u1
    w2 = c * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    return np.stack([w1, w2])


def make_mmoe_synthetic(n: int, correlation: float, *, d: int = 100, c: float = 1.0, m: int = 10,
                        noise_var: float = 0.01, seed: int = 0,
                        task_seed: int | None = None) -> MultiTaskRegression:
    """n samples of the paper's generator.

    task_seed fixes the weight vectors and sinusoid parameters (the *tasks*); seed draws the inputs
    and noise. Use the same task_seed with different seeds for train and test sets of the same
    tasks.
    """
    if n < 1 or m < 0:
        raise ValueError(f"need n >= 1 and m >= 0, got n={n}, m={m}")
    task_rng = np.random.default_rng(seed if task_seed is None else task_seed)
    w = make_task_weights(d, correlation, c, task_rng)  # (2, d)
    alpha, beta = task_rng.standard_normal(m), task_rng.standard_normal(m)  # (m,), (m,)
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((n, d))  # (N, d)
    wx = x @ w.T  # (N, 2)
    sines = np.sin(alpha[None, None, :] * wx[..., None] + beta[None, None, :]).sum(-1)  # (N, 2)
    y = wx + sines + rng.normal(0.0, np.sqrt(noise_var), size=(n, 2))
    return MultiTaskRegression(
        x=torch.as_tensor(x, dtype=torch.float32), y=torch.as_tensor(y, dtype=torch.float32),
        w=torch.as_tensor(w, dtype=torch.float32), correlation=float(correlation))
