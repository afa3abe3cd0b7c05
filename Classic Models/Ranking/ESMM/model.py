"""Entire Space Multi-Task Model (ESMM), with the counterfactual regularisers of ESCM² (IPS, DR).

Papers: Xiao Ma, Liqin Zhao, Guan Huang, Zhi Wang, Zelin Hu, Xiaoqiang Zhu, Kun Gai. "Entire Space
        Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion Rate".
        SIGIR 2018. https://arxiv.org/abs/1804.07931
        Hao Wang, Tai-Wei Chang, Tingting Liu, Jianqiang Huang, Zhichao Chen, Chunxu Yu, Ruopeng Li,
        Wei Chu. "ESCM²: Entire Space Counterfactual Multi-Task Model for Post-Click Conversion Rate
        Estimation". SIGIR 2022. https://arxiv.org/abs/2204.05125
Code by others: ESMM in Alibaba's X-DeepLearning (xdl-algorithm-solution/ESMM); ESCM² in PaddleRec
        (models/multitask/escm2). Read for the loss weights, never copied.

Usage::

    import torch
    from model import ESMM
    model = ESMM(sparse_vocab_sizes=(100, 50, 10), dim=8, tower_hidden=(32,))
    sparse = torch.randint(0, 10, (32, 3))                     # (B, F) ids, 0 = padding
    click = torch.randint(0, 2, (32,)).float()                 # y, every impression
    conversion = click * torch.randint(0, 2, (32,)).float()    # z, seen only after a click
    outputs = model(sparse)                                    # (B, 2) logits: CTR, CVR towers
    loss = model.loss(outputs, click, conversion)              # Eq. (3): CTR + CTCVR losses
    probs = model.predict(sparse)                              # (B, 3): pCTR, pCVR, pCTCVR
    model.save("m.pt")                                         # config + weights
    model = ESMM.load("m.pt")                                  # from this file alone
    escm2 = ESMM(sparse_vocab_sizes=(100, 50, 10), method="escm2-dr")  # + counterfactual risk

This file stands alone: it needs only torch. Copy it into your project as is.

Notation (same letters in the note, README.md §Maths):
    B: batch size     F: sparse fields     D: embedding dim per field     X = F * D: tower input
    y: click          z: conversion (observed only when y = 1)       r: conversion if clicked
    o, ô: click and its predicted probability pCTR, the propensity of ESCM²

ESMM (note §Maths):
    Eq. (1)  pCTCVR = pCTR x pCVR,  i.e. p(y=1, z=1 | x) = p(y=1 | x) p(z=1 | y=1, x)
    Eq. (3)  L = sum_i l(y_i, pCTR_i) + sum_i l(y_i & z_i, pCTR_i x pCVR_i)   over ALL impressions
    Both towers read one shared embedding table (§2.3): the CVR tower learns from the CTR task's
    far more numerous labels. The CVR tower gets no loss of its own: pCVR is an intermediate
    variable, trained only through the product.
ESCM² adds a counterfactual CVR risk over the entire space, estimated on the clicked impressions:
    IPS: R = 1/N sum_i o_i delta_i / ô_i,   delta_i = l(r_i, pCVR_i)
    DR:  R = 1/N sum_i [e_i + o_i (delta_i - e_i) / ô_i],   e_i = the imputation tower's delta
    L = L_CTR + lambda_c R + lambda_g L_CTCVR

`method` picks the objective: "esmm" (Eq. 3), "naive" (the paper's BASE: a CVR loss on clicked
impressions only, beside a CTR loss; with share_embeddings=False the two are separate models),
"escm2-ips", "escm2-dr".

NOTE: ESCM²'s propensity ô is pCTR detached from the graph and floored at 1 / max_ips_weight (the
      weight is clipped at 15, as PaddleRec's ESCM² does): the counterfactual risk trains the CVR
      tower, never the CTR tower, which has its own loss.
NOTE: DR trains its two parts on their own losses (joint learning of Wang et al., ICML 2019): the CVR
      tower sees the imputed errors as constants, the imputation tower fits delta on the clicked
      impressions weighted by 1 / ô. PaddleRec lets both gradients through both terms.
NOTE: the losses average over the batch (the paper writes sums): the same minimiser, a learning rate
      that does not depend on the batch size.
NOTE: a conversion label of an impression without a click is never read (it cannot be observed): any
      value there, NaN included, leaves every loss unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["esmm", "naive", "escm2-ips", "escm2-dr"]
METHODS = ("esmm", "naive", "escm2-ips", "escm2-dr")


@dataclass
class ESMMConfig:
    sparse_vocab_sizes: tuple[int, ...] = ()  # per sparse field, code 0 = padding/unknown
    dim: int = 18  # paper §3.1: embedding dim 18
    tower_hidden: tuple[int, ...] = (200, 80)  # paper §3.1: each tower's MLP 360 x 200 x 80 x 2
    method: Method = "esmm"  # the training objective, see the module docstring
    share_embeddings: bool = True  # paper §2.3: one lookup table; False: one per tower (ESMM-NS)
    ctcvr_weight: float = 1.0  # Eq. (3) weighs both losses 1; ESCM²'s lambda_g
    counterfactual_weight: float = 0.5  # ESCM²'s lambda_c (PaddleRec's default 0.5)
    max_ips_weight: float = 15.0  # 1 / ô clipped here (PaddleRec's ESCM²: 15)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear+ReLU per hidden width, then a plain Linear to out_dim."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _check(cfg: ESMMConfig) -> None:
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    if not cfg.sparse_vocab_sizes or any(v < 1 for v in cfg.sparse_vocab_sizes):
        raise ValueError(f"sparse_vocab_sizes needs one size >= 1 per field, got "
                         f"{cfg.sparse_vocab_sizes}")
    if cfg.dim < 1 or any(w < 1 for w in cfg.tower_hidden):
        raise ValueError(f"dim and tower widths must be >= 1, got dim {cfg.dim}, "
                         f"tower_hidden {cfg.tower_hidden}")
    if not (cfg.ctcvr_weight >= 0 and cfg.counterfactual_weight >= 0 and cfg.max_ips_weight >= 1):
        raise ValueError(f"need ctcvr_weight >= 0, counterfactual_weight >= 0, max_ips_weight >= 1; "
                         f"got {cfg.ctcvr_weight}, {cfg.counterfactual_weight}, {cfg.max_ips_weight}")


def check_ids(sparse: torch.Tensor, sizes: tuple[int, ...]) -> None:
    """Raise a ValueError when a code of `sparse` (B, F) lies outside field f's range 0..sizes[f]-1
    (it would read another row or fail with a bare IndexError). One min/max reduction per call."""
    if sparse.numel() == 0:
        return
    limit = torch.as_tensor(sizes, device=sparse.device)  # (F,)
    bad = (sparse.amin(0) < 0) | (sparse.amax(0) >= limit)  # (F,)
    if bad.any():
        f = int(bad.nonzero()[0])
        column = sparse[:, f]
        wrong = int(column[(column < 0) | (column >= sizes[f])][0])
        raise ValueError(f"sparse field {f}: id {wrong} is out of range; expected 0..{sizes[f] - 1} "
                         f"(vocabulary size {sizes[f]}, 0 = padding/unknown)")


def check_labels(outputs: torch.Tensor, click: torch.Tensor,
                 conversion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, z) as float (B,): y in {0, 1} everywhere, z in {0, 1} where y = 1; z where y = 0 is never
    read and comes back as 0 (it may hold anything, NaN included). One pass over (B,)."""
    B = outputs.shape[0]
    if B == 0:
        raise ValueError("loss: the batch is empty (0 rows); there is nothing to average")
    for name, t in (("click", click), ("conversion", conversion)):
        if t.shape != (B,):
            raise ValueError(f"{name} must have shape ({B},) like the outputs' rows, got "
                             f"{tuple(t.shape)}")
    y, z = click.float(), conversion.float()
    bad_y = ~((y == 0) | (y == 1))
    if bad_y.any():
        row = int(bad_y.nonzero()[0])
        raise ValueError(f"click[{row}] = {y[row].item()}; expected click labels in {{0, 1}}")
    bad_z = (y == 1) & ~((z == 0) | (z == 1))
    if bad_z.any():
        row = int(bad_z.nonzero()[0])
        raise ValueError(f"conversion[{row}] = {z[row].item()} on a clicked impression; expected "
                         "conversion labels in {0, 1}")
    return y, torch.where(y == 1, z, torch.zeros_like(z))


# --------------------------------------------------------------------------------------------------
# Serving and persistence helpers: one convention, the same code in every model file
# --------------------------------------------------------------------------------------------------


class _eval_mode:
    """Eval mode inside a `with` block; each submodule gets its own train/eval mode back after it."""

    def __init__(self, module: nn.Module):
        self.module, self.modes = module, [(m, m.training) for m in module.modules()]

    def __enter__(self) -> nn.Module:
        return self.module.eval()

    def __exit__(self, *exc) -> None:
        for m, training in self.modes:
            m.training = training


def _plain(value):
    """A config value in types torch.load(weights_only=True) reads: lists, a dtype by its name."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")  # torch.float64 -> "float64"
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _unplain(kind: str, value):
    """`_plain` undone for a field annotated `kind`: lists back to tuples, a dtype from its name."""
    if "tuple" in kind and isinstance(value, list):
        return tuple(_unplain(kind, v) for v in value)
    return getattr(torch, value, value) if "dtype" in kind and isinstance(value, str) else value


def _save_checkpoint(model: nn.Module, config, path, overwrite: bool, **extra) -> None:
    """torch.save {"model": class name, "config": plain types, "state_dict", **extra} to `path`."""
    config = {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    payload = {"model": type(model).__name__, "config": config, "state_dict": model.state_dict(),
               **extra}
    try:  # mode "x": the file is created only if it does not exist yet, in one step
        with open(path, "wb" if overwrite else "xb") as f:
            torch.save(payload, f)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None


def _read_checkpoint(cls: type, config_cls: type, path, map_location, extra=()) -> tuple:
    """(checkpoint, config) from a file `cls.save` wrote; any other file raises a ValueError."""
    keys = ["model", "config", "state_dict", *extra]
    kinds = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}  # "tuple[int, ...]"
    expected = f"expected a {cls.__name__}.save() dict: keys {keys}, config fields {list(kinds)}"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # a missing or unreadable file says so itself
    except Exception as e:  # not a torch.save file, or one holding more than plain types
        raise ValueError(f"{path}: {e}; {expected}") from e
    if not isinstance(ckpt, dict) or not set(keys) <= set(ckpt) or ckpt["model"] != cls.__name__:
        got = f", model {ckpt.get('model')!r}, keys {list(ckpt)}" if isinstance(ckpt, dict) else ""
        raise ValueError(f"{path} holds a {type(ckpt).__name__}{got}; {expected}")
    try:
        values = {k: _unplain(kinds.get(k, ""), v) for k, v in ckpt["config"].items()}
        return ckpt, config_cls(**values)
    except (AttributeError, TypeError) as e:  # not a dict, or a field missing or unknown
        raise ValueError(f"{path}: the saved config does not fit ({e}); {expected}") from e


def _load_weights(model: nn.Module, ckpt: dict, path, map_location) -> nn.Module:
    """ckpt["state_dict"] into `model`, moved to map_location when it names a device; eval mode."""
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError) as e:  # missing, unexpected or mis-shaped weights
        raise ValueError(f"{path}: the saved weights do not fit {type(model).__name__}: {e}") from e
    device = map_location if isinstance(map_location, (str, torch.device)) else None
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class ESMM(nn.Module):
    """Two towers over one embedding table: pCTR and pCVR, and pCTCVR = pCTR x pCVR (Eq. 1).

    `forward` returns the towers' logits (B, 2) [CTR, CVR] (B, 3 with the DR imputation tower's
    predicted error), `probabilities` maps them to (B, 3) [pCTR, pCVR, pCTCVR], `loss` is the
    objective of `config.method`, `predict` serves (B, 3) probabilities in eval mode.
    """

    def __init__(self, config: ESMMConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = ESMMConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        cfg = dataclasses.replace(cfg, sparse_vocab_sizes=tuple(cfg.sparse_vocab_sizes),
                                  tower_hidden=tuple(cfg.tower_hidden))
        _check(cfg)
        self.config = cfg
        X = len(cfg.sparse_vocab_sizes) * cfg.dim

        def table() -> nn.ModuleList:
            return nn.ModuleList(nn.Embedding(v, cfg.dim) for v in cfg.sparse_vocab_sizes)

        self.embeddings = table()  # the shared lookup table (§2.3); the CTR tower's when not shared
        self.cvr_embeddings = None if cfg.share_embeddings else table()
        self.ctr_tower = mlp(X, cfg.tower_hidden, 1)
        self.cvr_tower = mlp(X, cfg.tower_hidden, 1)
        # ESCM²-DR: a third tower imputes the CVR error delta of every impression
        self.imputation_tower = mlp(X, cfg.tower_hidden, 1) if cfg.method == "escm2-dr" else None

    def embed(self, sparse: torch.Tensor, tables: nn.ModuleList) -> torch.Tensor:
        """Concatenated field embeddings: (B, F) ids -> (B, F * D)."""
        return torch.cat([table(sparse[:, f]) for f, table in enumerate(tables)], dim=-1)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        """sparse: (B, F) int64 ids, 0 = padding. Returns the logits (B, 2) [CTR, CVR], or (B, 3)
        with the imputed CVR error for method "escm2-dr"; (0, 2) for an empty batch."""
        n_fields = len(self.config.sparse_vocab_sizes)
        if sparse.dim() != 2 or sparse.shape[1] != n_fields or sparse.is_floating_point():
            raise ValueError(f"expected sparse (B, {n_fields}) int64 ids, got "
                             f"{tuple(sparse.shape)} {sparse.dtype}")
        check_ids(sparse, self.config.sparse_vocab_sizes)
        x = self.embed(sparse, self.embeddings)  # (B, X)
        x_cvr = x if self.cvr_embeddings is None else self.embed(sparse, self.cvr_embeddings)
        parts = [self.ctr_tower(x), self.cvr_tower(x_cvr)]  # 2 x (B, 1): shared x, two towers
        if self.imputation_tower is not None:
            parts.append(self.imputation_tower(x_cvr))  # (B, 1) ê: the predicted error
        return torch.cat(parts, dim=-1)  # (B, 2) or (B, 3)

    @staticmethod
    def probabilities(outputs: torch.Tensor) -> torch.Tensor:
        """(B, 3) [pCTR, pCVR, pCTCVR] from forward's logits; pCTCVR = pCTR x pCVR exactly."""
        p_ctr, p_cvr = torch.sigmoid(outputs[:, 0]), torch.sigmoid(outputs[:, 1])  # (B,), (B,)
        return torch.stack([p_ctr, p_cvr, p_ctr * p_cvr], dim=-1)  # Eq. (1)

    @staticmethod
    def ctcvr_loss(outputs: torch.Tensor, yz: torch.Tensor) -> torch.Tensor:
        """Log loss of pCTCVR = pCTR x pCVR against y & z, computed in log space: (B, 2) -> ()."""
        log_p = F.logsigmoid(outputs[:, 0]) + F.logsigmoid(outputs[:, 1])  # log pCTCVR, Eq. (1)
        log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))  # log(1 - pCTCVR)
        return -(yz * log_p + (1 - yz) * log_not_p).mean()

    def counterfactual_risk(self, outputs: torch.Tensor, y: torch.Tensor,
                            z: torch.Tensor) -> torch.Tensor:
        """ESCM²: the CVR log loss over every impression, estimated from the clicked ones (IPS) and
        the imputation tower (DR). outputs (B, 2|3), y and z (B,) -> ()."""
        cfg = self.config
        propensity = torch.sigmoid(outputs[:, 0]).detach().clamp_min(1 / cfg.max_ips_weight)  # ô
        delta = F.binary_cross_entropy_with_logits(outputs[:, 1], z, reduction="none")  # (B,)
        if cfg.method == "escm2-ips":
            return (y * delta / propensity).mean()  # R_IPS: clicked rows weighted by 1 / ô
        e_hat = outputs[:, 2]  # (B,) imputed delta, for clicked and non-clicked rows alike
        dr = e_hat.detach() + y * (delta - e_hat.detach()) / propensity  # R_DR
        imputation = y * (delta.detach() - e_hat) ** 2 / propensity  # the imputation tower's loss
        return dr.mean() + imputation.mean()

    def loss(self, outputs: torch.Tensor, click: torch.Tensor,
             conversion: torch.Tensor) -> torch.Tensor:
        """The training objective of `config.method` on a batch of impressions.

        Args:
            outputs: (B, 2|3) forward's logits.  click: (B,) y in {0, 1}.
            conversion: (B,) z in {0, 1} where click = 1; read nowhere else.
        Returns:
            the scalar loss. "esmm": Eq. (3), log losses of pCTR (label y) and pCTCVR (label y & z)
            over every impression; the CVR tower is trained only through the product.
        """
        y, z = check_labels(outputs, click, conversion)
        cfg = self.config
        loss_ctr = F.binary_cross_entropy_with_logits(outputs[:, 0], y)  # every impression
        if cfg.method == "naive":  # the paper's BASE: a CVR loss on the clicked impressions only
            clicked = y == 1
            if not clicked.any():
                return loss_ctr + 0.0 * outputs[:, 1].sum()  # no click: the CVR tower learns nothing
            return loss_ctr + F.binary_cross_entropy_with_logits(outputs[clicked, 1], z[clicked])
        total = loss_ctr + cfg.ctcvr_weight * self.ctcvr_loss(outputs, y * z)  # Eq. (3)
        if cfg.method == "esmm":
            return total
        return total + cfg.counterfactual_weight * self.counterfactual_risk(outputs, y, z)

    def predict(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, 3) [pCTR, pCVR, pCTCVR] in eval mode, detached; the caller's train/eval modes are
        kept. Rank by pCTCVR for expected conversions per impression."""
        with torch.no_grad(), _eval_mode(self):
            return self.probabilities(self(sparse))

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `load` to `path`, written in place; an
        existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> ESMM:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, ESMMConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
