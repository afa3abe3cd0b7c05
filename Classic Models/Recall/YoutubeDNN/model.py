"""YoutubeDNN candidate generation.

Paper: Paul Covington, Jay Adams, Emre Sargin. "Deep Neural Networks for YouTube Recommendations".
RecSys 2016. https://dl.acm.org/doi/10.1145/2959100.2959190
Official code: none was released; the paper's Figure 3 and section 3 are the specification.

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import YoutubeDNN, YoutubeDNNConfig
    model = YoutubeDNN(config=YoutubeDNNConfig(n_items=100, dim=16, hidden=(32,)))
    history = torch.randint(0, 101, (4, 10))  # (B, L) earlier items, 0 = padding (any side)
    u = model.user_tower(history=history)  # (B, D); no example age = 0, as at serving
    scores = u @ model.item_tower().T  # (B, N + 1): the logits of Eq. (1)
    negatives = torch.randint(1, 101, (32,))  # (M,) items sampled from Q, shared by the batch
    loss = model.loss(user_vec=u, target=torch.randint(1, 101, (4,)), negatives=negatives,
                      log_q_target=torch.zeros(4), log_q_negatives=torch.zeros(32))
    top, items = model.recommend(history, k=5)  # (B, 5) best unseen items, u . v_j
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = YoutubeDNN.load("m.pt")  # rebuilt from this file alone, in eval mode

What is here (the note's sections in brackets; the paper numbers almost no equations, so the note
numbers Eq. (1)-(6) itself, (1) being the paper's softmax of section 3.1):
- `masked_mean()`, `user_tower()`: averaged bag embeddings of the watch history and of any other bag
  of ids (categories, brands, ...), concatenated with user features and the example age, then a tower of
  ReLU layers whose top layer is the user vector u (Figure 3) [note: Maths, Eq. (2)-(3)].
- `item_tower()`: the softmax weights v_j, one row per item, which serve as item vectors for
  nearest-neighbour serving [note: Training and serving].
- `loss()`: sampled softmax with log-Q correction for the sampling distribution, the paper's way of
  training the softmax of Eq. (1) over millions of classes [note: Maths, Eq. (4)-(5)].
- `inbatch_loss()`: the other alternative at millions of classes, the batch's other targets as the
  negatives with the log-Q correction of Yi et al. (RecSys 2019) [note: Training and serving].

Notation: B batch, L history length, A bag length (e.g. attribute ids of the history), F user features,
D embedding dim, M sampled negatives, N items (ids 1..N, 0 = padding).

NOTE: the example age of the paper is "the age of the training example" in wall-clock time; data with no
timestamps (positions only) can pass any normalised recency instead. The model only sees a float in
[0, 1] per example, which is 0 at serving time as in the paper.
NOTE: the paper's tower ends in a ReLU layer, so u >= 0. `final_relu=False` makes the last layer
linear; it is off by default (paper setting) and the note reports which setting each result used.
NOTE: the history and the bags are averaged, so their order is never read: left padding, right
padding (what `torch.nn.utils.rnn.pad_sequence` makes) and padding between ids give the same u.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# B: batch, L: history length, A: bag length, F: user features, D: dim, M: negatives, N: items


@dataclass
class YoutubeDNNConfig:
    n_items: int  # item ids are 1..n_items; 0 is padding
    dim: int = 64  # D: size of item vectors and of the user vector u
    # extra bags of ids pooled like the watch history: name -> vocabulary size (0 = padding)
    bag_sizes: dict[str, int] = field(default_factory=dict)
    # vocabulary size of each categorical user feature (paper: gender, geography, device, ...)
    user_feature_sizes: tuple[int, ...] = ()
    use_example_age: bool = True  # paper §3.3: removes the bias towards the past of the training window
    hidden: tuple[int, ...] = (256, 128)  # paper's tower is "depth 1..4" up to 2048-1024-512-256
    dropout: float = 0.0  # the paper names none; regularises small data
    final_relu: bool = True  # paper: u is the output of the top ReLU layer


def masked_mean(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Average of the embeddings of the non-padding ids ("bag" averaging of Figure 3).

    One fused `embedding_bag` (mean over the ids that are not 0): no (B, L, D) tensor is built,
    which made the padded-gather-then-mask version the slowest part of a training step.

    Args:
        table: the embedding table; id 0 is padding.
        ids: (B, L) int64, 0 = padding.
    Returns:
        (B, D); an all-padding row gives the zero vector.
    """
    return F.embedding_bag(ids, table.weight, mode="mean", padding_idx=0)


def check_ids(name: str, ids: torch.Tensor, high: int, low: int = 0) -> None:
    """Raise a ValueError naming the input when an id lies outside low..high: an embedding lookup
    would otherwise fail with a bare IndexError (or, on a GPU, a device assert). One min and one max
    per call; skipped while torch.export traces the model (ONNX export), where ids are symbolic."""
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()  # one pass, one device sync
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name}: id {bad} is out of range; expected ids in {low}..{high}")


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


def _top_k(scores: torch.Tensor, seen: torch.Tensor | None, k: int) -> tuple:
    """(scores, items), each (B, k) best first, of scores (B, N + 1) without padding (item 0) and,
    if given, each row's `seen` ids (B, L). A ValueError when a row has fewer than k items left."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    out = torch.zeros_like(scores, dtype=torch.bool)  # (B, N + 1), True = left out
    out[:, 0] = True  # padding is never recommended
    if seen is not None:
        out.scatter_(1, seen.to(scores.device), True)
    left = int((~out).sum(1).min()) if len(out) else k  # items left in the emptiest row
    if left < k:
        raise ValueError(f"recommend: a row has {left} items left; expected k <= {left}, got {k}")
    return tuple(scores.masked_fill(out, float("-inf")).topk(int(k), dim=1))  # (B, k) each


class YoutubeDNN(nn.Module):
    """Deep candidate generation model (paper §3, Figure 3)."""

    def __init__(self, config: YoutubeDNNConfig) -> None:
        super().__init__()
        if config.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {config.n_items}")
        if config.dim < 1:
            raise ValueError(f"dim must be >= 1, got {config.dim}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        for name, size in config.bag_sizes.items():
            if size < 2:
                raise ValueError(f"bag {name!r} needs a vocabulary of >= 2 ids (0 = padding), got {size}")
        self.config = config
        D = config.dim
        # "watch vector": embeddings of the history ids, averaged
        self.history_embedding = nn.Embedding(config.n_items + 1, D, padding_idx=0)
        self.bag_embeddings = nn.ModuleDict(
            {name: nn.Embedding(size, D, padding_idx=0) for name, size in config.bag_sizes.items()}
        )
        self.user_feature_embeddings = nn.ModuleList(
            nn.Embedding(size, D) for size in config.user_feature_sizes
        )
        n_in = D * (1 + len(config.bag_sizes) + len(config.user_feature_sizes))
        n_in += int(config.use_example_age)
        layers: list[nn.Module] = []
        sizes = [n_in, *config.hidden, D]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            last = i == len(sizes) - 2
            if not last or config.final_relu:
                layers.append(nn.ReLU())
            if not last and config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
        self.tower = nn.Sequential(*layers)
        # softmax weights v_j of Eq. (1) = item vectors for serving; row 0 (padding) is never a class
        self.item_embedding = nn.Embedding(config.n_items + 1, D, padding_idx=0)
        nn.init.normal_(self.history_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        for emb in [*self.bag_embeddings.values(), *self.user_feature_embeddings]:
            nn.init.normal_(emb.weight, std=0.1)
        with torch.no_grad():
            self.history_embedding.weight[0].zero_()
            self.item_embedding.weight[0].zero_()
            for emb in self.bag_embeddings.values():
                emb.weight[0].zero_()

    def user_tower(
        self,
        *,
        history: torch.Tensor,
        bags: dict[str, torch.Tensor] | None = None,
        user_features: torch.Tensor | None = None,
        example_age: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vector u of Eq. (1).

        Args:
            history: (B, L) int64 item ids of earlier items, 0 = padding (any side).
            bags: name -> (B, A) int64 ids of each bag in `config.bag_sizes` (e.g. the categories of the
                history items), 0 = padding.
            user_features: (B, F) int64 categorical user features, one column per `user_feature_sizes`.
            example_age: (B,) float in [0, 1], age of the training example; None or 0 at serving.
        Returns:
            (B, D) float user vectors.
        """
        cfg = self.config
        if history.dim() != 2:
            raise ValueError(f"history must be (B, L), got shape {tuple(history.shape)}")
        B, L = history.shape
        bags = bags or {}
        if set(bags) != set(cfg.bag_sizes):
            raise ValueError(f"bags must have keys {sorted(cfg.bag_sizes)}, got {sorted(bags)}")
        check_ids("history (item ids, 0 = padding)", history, cfg.n_items)
        for name, ids in bags.items():
            check_ids(f"bag {name!r}", ids, cfg.bag_sizes[name] - 1)
        parts = [masked_mean(self.history_embedding, history)]  # (B, D)
        for name in cfg.bag_sizes:  # config order, so the concatenation is fixed
            ids = bags[name]
            if ids.dim() != 2 or ids.shape[0] != B:
                raise ValueError(f"bag {name!r} must be (B={B}, A), got {tuple(ids.shape)}")
            parts.append(masked_mean(self.bag_embeddings[name], ids))  # (B, D)
        if cfg.user_feature_sizes:
            if user_features is None or user_features.shape != (B, len(cfg.user_feature_sizes)):
                raise ValueError(
                    f"user_features must be (B={B}, F={len(cfg.user_feature_sizes)}) int64"
                )
            for f, emb in enumerate(self.user_feature_embeddings):
                check_ids(f"user_features[:, {f}]", user_features[:, f], emb.num_embeddings - 1)
                parts.append(emb(user_features[:, f]))  # (B, D)
        if cfg.use_example_age:
            if example_age is None:  # serving: "set to zero", the very end of the training window
                example_age = history.new_zeros(B, dtype=parts[0].dtype)
            parts.append(example_age.to(parts[0].dtype).reshape(B, 1))  # (B, 1)
        return self.tower(torch.cat(parts, dim=-1))  # (B, D_in) -> (B, D)

    def item_tower(self) -> torch.Tensor:
        """Item vectors v_j: (N + 1, D), row 0 = padding (all zeros, never retrieved as a class)."""
        return self.item_embedding.weight

    def forward(self, **user_inputs: torch.Tensor) -> torch.Tensor:
        """Scores of every item, u . v_j (the logits of Eq. (1)): (B, N + 1)."""
        return self.user_tower(**user_inputs) @ self.item_tower().T  # (B, D) @ (D, N+1)

    def loss(
        self,
        *,
        user_vec: torch.Tensor,
        target: torch.Tensor,
        negatives: torch.Tensor,
        log_q_target: torch.Tensor,
        log_q_negatives: torch.Tensor,
    ) -> torch.Tensor:
        """Sampled softmax with log-Q correction (paper §3.2, after Jean et al. 2015).

        The softmax of Eq. (1) over all N items is replaced by one over the true item and M items sampled
        from a distribution Q shared by the batch. Each logit is corrected by subtracting log Q(j), the
        log of the expected number of times item j enters the sample, so that frequently sampled items
        are not over-penalised; the estimate is then consistent with the full softmax. A sampled item that
        equals the row's target (an "accidental hit") is removed from that row.

        Args:
            user_vec: (B, D) from `user_tower`.
            target: (B,) int64 next item, >= 1.
            negatives: (M,) int64 sampled item ids, shared by the batch.
            log_q_target: (B,) log expected count (or probability) of each target under Q.
            log_q_negatives: (M,) the same for the negatives. A constant added to both cancels.
        Returns:
            scalar mean cross-entropy.
        """
        if target.dim() != 1 or target.shape[0] != user_vec.shape[0]:
            raise ValueError("target must be (B,) and match user_vec's batch")
        if negatives.dim() != 1:
            raise ValueError(f"negatives must be (M,), got shape {tuple(negatives.shape)}")
        if bool((target < 1).any()):
            raise ValueError("target contains the padding id 0")
        check_ids("target", target, self.config.n_items, low=1)
        check_ids("negatives", negatives, self.config.n_items, low=1)
        v_target = self.item_embedding(target)  # (B, D)
        v_neg = self.item_embedding(negatives)  # (M, D)
        pos_logit = (user_vec * v_target).sum(-1) - log_q_target  # (B,)
        neg_logit = user_vec @ v_neg.T - log_q_negatives.unsqueeze(0)  # (B, D) @ (D, M) -> (B, M)
        hit = target.unsqueeze(1) == negatives.unsqueeze(0)  # (B, M) accidental hits
        neg_logit = neg_logit.masked_fill(hit, float("-inf"))
        logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1)  # (B, 1 + M)
        zeros = torch.zeros_like(target)  # the true class sits in column 0
        return F.cross_entropy(logits, zeros)

    def inbatch_loss(
        self,
        *,
        user_vec: torch.Tensor,
        target: torch.Tensor,
        log_q_target: torch.Tensor,
    ) -> torch.Tensor:
        """In-batch softmax with log-Q correction (Yi et al., RecSys 2019, Eq. (3)): the negatives of
        an example are the other examples' targets, so no sampler and no (B, M) gather of extra rows.

        A batch's targets are a sample of the training targets, so item j enters it with probability
        p_j (its share of the training targets): popular items are drawn as negatives far more often
        than uniformly. Every logit u_i . v_j (the positive's too) is corrected to u_i . v_j - log p_j.
        A column whose item equals row i's own target (another example with the same target, an
        "accidental hit") is removed from row i.

        Args:
            user_vec: (B, D) from `user_tower`.
            target: (B,) int64 next item of each example, >= 1.
            log_q_target: (B,) log p_j of each target (zeros: no correction). A constant cancels.
        Returns:
            scalar mean cross-entropy over the B examples.
        """
        if target.dim() != 1 or target.shape[0] != user_vec.shape[0]:
            raise ValueError("target must be (B,) and match user_vec's batch")
        if log_q_target.shape != target.shape:
            raise ValueError(f"log_q_target must be (B,), got shape {tuple(log_q_target.shape)}")
        check_ids("target", target, self.config.n_items, low=1)
        v_target = self.item_embedding(target)  # (B, D)
        logits = user_vec @ v_target.T - log_q_target.unsqueeze(0)  # (B, D) @ (D, B) -> (B, B)
        hit = target.unsqueeze(1) == target.unsqueeze(0)  # (B, B) column j's item is row i's target
        hit.fill_diagonal_(False)  # the diagonal is the positive
        logits = logits.masked_fill(hit, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(target), device=target.device))

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by u . v_j, in eval mode,
        less `history`'s if exclude_seen. `inputs` go to forward (`bags`, `user_features`, ...)."""
        with _eval_mode(self):
            scores = self(history=history, **inputs)  # (B, N + 1) u . v_j
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `YoutubeDNN.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> YoutubeDNN:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, YoutubeDNNConfig, path, map_location)
        return _load_weights(cls(config=config), ckpt, path, map_location)
