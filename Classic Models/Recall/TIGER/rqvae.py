"""RQ-VAE: the residual-quantised autoencoder that turns item content embeddings into semantic IDs.

Paper: Shashank Rajput, Nikhil Mehta, Anima Singh, Raghunandan Keshavan, Trung Vu, Lukasz Heldt,
Lichan Hong, Yi Tay, Vinh Q. Tran, Jonah Samost, Maciej Kula, Ed H. Chi, Maheswaran Sathiamoorthy,
"Recommender Systems with Generative Retrieval", NeurIPS 2023. https://arxiv.org/abs/2305.05065
Official code: none released. Residual quantisation follows Zeghidour et al. (SoundStream, 2021) and
Lee et al. (RQ-VAE, CVPR 2022), as the paper does.

Usage::

    import torch
    from rqvae import RQVAE, RQVAEConfig, SemanticIDTable
    rqvae = RQVAE(RQVAEConfig(input_dim=32, hidden_dims=(16,), latent_dim=8, codebook_size=16))
    x = torch.randn(64, 32)                        # (B, E) item content embeddings
    out = rqvae(x)                                 # first call: k-means init of the codebooks
    out["loss"].backward()                         # Eq. (6) = recon Eq. (4) + Eq. (5)
    codes = rqvae.eval().encode(x)                 # (B, M) codes per item
    table = SemanticIDTable.from_codes(codes, 16)  # + de-duplicating token, lookup both ways

This file stands alone: it needs only torch. Copy it into your project as is. It is the first of
TIGER's two learned parts; the second (the seq2seq recommender) is model.py beside it.

Notation (the note, README.md, uses the same letters):
    B: batch (items), E: content-embedding dim, D: latent dim, M: levels (codebooks),
    C: codes per codebook. Level d = 0..M-1 (the paper counts from 0 too).

What the model does (note, "Maths"; the paper numbers no equations):
    z = Enc(x)                                                  Eq. (1)  DNN encoder, E -> D
    r_0 = z;  c_d = argmin_k ||r_d - e^d_k||;  r_{d+1} = r_d - e^d_{c_d}   Eq. (2)  residual quantisation
    ẑ = Σ_d e^d_{c_d};  x̂ = Dec(ẑ)                              Eq. (3)  quantised latent, decoder
    L_recon = ||x - x̂||²                                        Eq. (4)
    L_rqvae = Σ_d ||sg[r_d] - e^d_{c_d}||² + β ||r_d - sg[e^d_{c_d}]||²   Eq. (5)  codebook + commitment
    L = L_recon + L_rqvae                                       Eq. (6)
    Straight-through: the decoder sees z + sg[ẑ - z], so gradients flow from x̂ into the encoder.

Collapse guard (the paper names k-means initialisation; this file adds a second, optional guard):
    - `init_codebooks(x)`: k-means of each level's residuals on the first batch (the paper's guard).
    - `restart_dead_codes(x, usage)`: codes chosen by no item since the last call are moved onto
      residuals of random items of the batch (dead-code re-initialisation, as SoundStream /
      Jukebox do). The caller decides how often (the demo: every `--dead-code-every` = 100 steps,
      until the last 25%).

NOTE (deviations, each listed in the note's "Deviations" section):
- The paper feeds 768-d Sentence-T5 embeddings; the input size E is a config field here, because the
  demo feeds all-MiniLM-L6-v2 embeddings of the title (384-d) with an attribute-id block appended, or
  TF-IDF + TruncatedSVD embeddings where MiniLM is not installed.
- Dead-code re-initialisation is not in the paper (it names only k-means init); it is optional
  (`restart_dead_codes` is never called by the model itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class RQVAEConfig:
    input_dim: int  # E: content-embedding dim (paper: 768, Sentence-T5)
    hidden_dims: tuple[int, ...] = field(default=(512, 256, 128))  # paper: 512-256-128, ReLU
    latent_dim: int = 32  # D, paper: 32
    n_levels: int = 3  # M, paper: 3 codebooks
    codebook_size: int = 256  # C, paper: 256 codes per level
    beta: float = 0.25  # commitment weight, paper: 0.25
    kmeans_iters: int = 20  # Lloyd iterations of the first-batch initialisation

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.latent_dim < 1:
            raise ValueError(f"input_dim and latent_dim must be >= 1, got {self.input_dim}, "
                             f"{self.latent_dim}")
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive, got {self.hidden_dims}")
        if self.n_levels < 1 or self.codebook_size < 2:
            raise ValueError(f"need n_levels >= 1 and codebook_size >= 2, got {self.n_levels}, "
                             f"{self.codebook_size}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear-ReLU stack with a linear last layer: the paper's DNN encoder and (mirrored) decoder."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Plain Lloyd's k-means with k-means++-style seeding by distance sampling. Returns (k, D) centres.

    With fewer distinct points than k, the extra centres are copies of random points (they start
    dead and are what `restart_dead_codes` is for).
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(-1)  # (B,)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            idx = torch.randint(n, (1,), generator=generator, device="cpu").item()
        else:
            idx = torch.multinomial((d2 / total).cpu(), 1, generator=generator).item()
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
    c = torch.stack(centres)  # (k, D)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(-1)  # (B,)
        sums = torch.zeros_like(c).index_add_(0, assign, x)  # (k, D)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
    return c


class RQVAE(nn.Module):
    """Encoder -> M-level residual quantiser -> decoder. `forward` returns the loss terms and codes."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        if not isinstance(config, RQVAEConfig):
            raise TypeError(f"config must be an RQVAEConfig, got {type(config).__name__}")
        self.config = config
        dims = [config.input_dim, *config.hidden_dims, config.latent_dim]
        self.encoder = mlp(dims)  # Eq. (1)
        self.decoder = mlp(dims[::-1])  # Eq. (3), mirrored
        self.codebooks = nn.Parameter(torch.randn(config.n_levels, config.codebook_size,
                                                  config.latent_dim) * 0.01)  # (M, C, D)
        self.register_buffer("initialised", torch.tensor(False))

    # -- Eq. (2): residual quantisation ---------------------------------------------------------
    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantisation of latents z: (B, D).

        Returns codes (B, M) int64, residuals (B, M, D) = r_0..r_{M-1} (the input of each level),
        and chosen codewords (B, M, D) = e^d_{c_d}.
        """
        r = z
        codes, residuals, words = [], [], []
        for d in range(self.config.n_levels):
            book = self.codebooks[d]  # (C, D)
            c = torch.cdist(r.detach(), book.detach()).argmin(-1)  # (B,) nearest code
            e = book[c]  # (B, D), differentiable w.r.t. the codebook
            codes.append(c)
            residuals.append(r)
            words.append(e)
            r = r - e.detach()  # r_{d+1}; the codebook gets its gradient from Eq. (5) only
        return torch.stack(codes, 1), torch.stack(residuals, 1), torch.stack(words, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, E) float content embeddings. Returns codes (B, M), x_hat (B, E), and the losses."""
        if x.dim() != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"x must be (batch, {self.config.input_dim}), got {tuple(x.shape)}")
        if not bool(self.initialised):
            if not self.training:
                raise RuntimeError("RQVAE codebooks are not initialised: call init_codebooks(x) on "
                                   "a first batch (or train one step) before encoding")
            self.init_codebooks(x)
        z = self.encoder(x)  # (B, D)  Eq. (1)
        codes, residuals, words = self.quantize(z)  # (B, M), (B, M, D), (B, M, D)  Eq. (2)
        z_q = words.sum(1)  # (B, D)  ẑ
        z_st = z + (z_q - z).detach()  # straight-through estimator
        x_hat = self.decoder(z_st)  # (B, E)  Eq. (3)
        return {"codes": codes, "x_hat": x_hat, "z": z, "residuals": residuals, "words": words,
                **self.loss(x=x, x_hat=x_hat, residuals=residuals, words=words)}

    def loss(self, *, x: torch.Tensor, x_hat: torch.Tensor, residuals: torch.Tensor,
             words: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. (4)-(6). x, x_hat: (B, E); residuals, words: (B, M, D). Returns scalar tensors."""
        recon = (x_hat - x).pow(2).sum(-1).mean()  # Eq. (4): squared norm per item, batch mean
        codebook = (words - residuals.detach()).pow(2).sum(-1)  # (B, M) ||sg[r_d] - e||², moves codes
        commit = (residuals - words.detach()).pow(2).sum(-1)  # (B, M) ||r_d - sg[e]||², moves encoder
        rq = (codebook + self.config.beta * commit).sum(-1).mean()  # Eq. (5): sum over levels d
        return {"loss": recon + rq, "recon": recon, "rqvae": rq}  # Eq. (6)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, E) content embeddings -> (B, M) int64 codes (the semantic ID before de-duplication)."""
        if not bool(self.initialised):
            raise RuntimeError("RQVAE codebooks are not initialised: train it first")
        return self.quantize(self.encoder(x))[0]

    # -- collapse guards ------------------------------------------------------------------------
    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """The paper's guard: k-means of each level's residuals on the first batch x: (B, E)."""
        C = self.config.codebook_size
        if x.shape[0] < C:
            raise ValueError(f"k-means initialisation needs a first batch of >= {C} items "
                             f"(codebook_size), got {x.shape[0]}")
        r = self.encoder(x)  # (B, D)
        for d in range(self.config.n_levels):
            centres = kmeans(r, C, self.config.kmeans_iters, generator)  # (C, D)
            self.codebooks.data[d] = centres
            r = r - centres[torch.cdist(r, centres).argmin(-1)]
        self.initialised.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor, usage: torch.Tensor,
                           generator: torch.Generator | None = None) -> int:
        """Move codes with usage == 0 onto residuals of random items of x: (B, E).

        usage: (M, C) counts of how often each code was chosen since the last call (see
        `code_usage`). Returns the number of codes restarted. Level d's dead codes take level-d
        residuals, so a restarted code lands where the data are.
        """
        if usage.shape != self.codebooks.shape[:2]:
            raise ValueError(f"usage must be {tuple(self.codebooks.shape[:2])}, got {tuple(usage.shape)}")
        _, residuals, _ = self.quantize(self.encoder(x))  # (B, M, D)
        n = 0
        for d in range(self.config.n_levels):
            dead = torch.nonzero(usage[d] == 0).squeeze(1)
            if len(dead) == 0:
                continue
            pick = torch.randint(x.shape[0], (len(dead),), generator=generator, device="cpu")
            self.codebooks.data[d, dead] = residuals[pick.to(x.device), d]
            n += len(dead)
        return n

    def code_usage(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, M) codes -> (M, C) counts per code."""
        C = self.config.codebook_size
        offsets = torch.arange(codes.shape[1], device=codes.device) * C  # (M,)
        counts = torch.bincount((codes + offsets).flatten(), minlength=codes.shape[1] * C)
        return counts.view(codes.shape[1], C)


# --------------------------------------------------------------------------------------------------
# Semantic IDs: M codes + a de-duplicating last token (note, "Maths")
# --------------------------------------------------------------------------------------------------


def deduplicate(codes: torch.Tensor) -> torch.Tensor:
    """Append the paper's collision token: items sharing the same M codes get 0, 1, 2, ... in order.

    codes: (N, M) int64 for items 1..N (row i-1 = item i). Returns (N, M+1) unique semantic IDs.
    Vectorised: sort the rows, then each row's rank within its run of equal rows.
    """
    if codes.dim() != 2:
        raise ValueError(f"codes must be (items, levels), got shape {tuple(codes.shape)}")
    n = codes.shape[0]
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)  # (N,) group of equal rows
    order = torch.argsort(inverse, stable=True)  # items of one group are contiguous, by item id
    sorted_groups = inverse[order]
    starts = torch.ones(n, dtype=torch.bool, device=codes.device)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(n, device=codes.device), 0), 0).values
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(n, device=codes.device) - first  # position within the group
    return torch.cat([codes, rank[:, None]], 1)


class SemanticIDTable:
    """Lookup both ways between item ids (1..N) and semantic IDs (tuples of M+1 codes).

    item_to_sid: (N+1, M+1) int64, row 0 = padding (all -1).
    sid_to_item(sids): (..., M+1) -> (...) item ids, 0 where no item has that ID. Vectorised by
    packing each ID into one int64 key and `searchsorted` over the sorted keys.
    """

    def __init__(self, sids: torch.Tensor, sizes: list[int]):
        if sids.dim() != 2 or sids.shape[1] != len(sizes):
            raise ValueError(f"sids must be (items, {len(sizes)}), got {tuple(sids.shape)}")
        if (sids < 0).any() or (sids >= torch.tensor(sizes)).any():
            raise ValueError("every code must lie in [0, size) of its position")
        self.sizes = list(sizes)
        self.item_to_sid = torch.cat([torch.full((1, sids.shape[1]), -1, dtype=torch.long),
                                      sids.long()])  # (N+1, M+1)
        keys = self.pack(sids.long())
        self.sorted_keys, order = torch.sort(keys)
        if (self.sorted_keys[1:] == self.sorted_keys[:-1]).any():
            raise ValueError("semantic IDs are not unique: de-duplicate them first")
        self.sorted_items = order + 1  # item ids in key order

    @classmethod
    def from_codes(cls, codes: torch.Tensor, codebook_size: int) -> SemanticIDTable:
        sids = deduplicate(codes)
        last = int(sids[:, -1].max()) + 1
        return cls(sids, [codebook_size] * codes.shape[1] + [last])

    def pack(self, sids: torch.Tensor) -> torch.Tensor:
        """(..., M+1) codes -> (...) int64 keys (mixed radix; order = lexicographic order)."""
        key = torch.zeros(sids.shape[:-1], dtype=torch.long, device=sids.device)
        for j, s in enumerate(self.sizes):
            key = key * s + sids[..., j]
        return key

    def sid_to_item(self, sids: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor(self.sizes, device=sids.device)
        in_range = ((sids >= 0) & (sids < sizes)).all(-1)  # (...) a code out of range: no item
        keys = self.pack(sids.long().clamp(min=0))  # (...)
        sk = self.sorted_keys.to(keys.device)
        pos = torch.searchsorted(sk, keys.flatten()).clamp(max=len(sk) - 1)
        hit = (sk[pos] == keys.flatten()) & in_range.flatten()
        items = torch.where(hit, self.sorted_items.to(keys.device)[pos], 0)
        return items.view(keys.shape)

    @property
    def n_items(self) -> int:
        return self.item_to_sid.shape[0] - 1
