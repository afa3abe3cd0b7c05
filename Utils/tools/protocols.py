"""The same trained models scored under several evaluation protocols (the numbers of Recall/PROTOCOLS.md).

Every recall demo can write the vectors it ranks with (`--export-vectors FILE.npz`: item vectors and the
user vectors after each user's whole history, the state that scores the test item). This tool reads
several such files for one data set and scores each model, on the test items of the same leave-one-out
split, in the ways papers do:

- full ranking over all items, seen items excluded (this repo's protocol), and with seen items kept;
- sampled ranking: the test item among 100 negatives drawn uniformly from the items the user has not
  interacted with (the SASRec paper's protocol), and among 100 drawn in proportion to popularity (the
  protocol of BERT4Rec and S3-Rec); the same negatives for every model (one draw, `--seed`);
- ties: a constant scorer under the pessimistic rule used here, and under the optimistic one (the
  target ranked first among equal scores) that fooled a peer library's evaluation.

The full-ranking numbers are checked against the test metrics each demo printed (the file named beside
the vectors), so the vectors are the ones the demo was scored with. Popularity (training counts) is
scored too. Prints one table and one RESULT line (`--out` writes it):

    python -m Utils.tools.protocols --data seqtxt:../shared/data/amazon-beauty/Beauty.txt \\
        --model "SASRec, full softmax=runs/sasrec_ce.npz:runs/sasrec_ce.json" ... --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import Datasets
from Utils.evaluation import evaluate_full_ranking
from Utils.io import add_common_args, print_result
from Utils.metrics import ranking_metrics

KS = (1, 5, 10, 20, 50)


def load_vectors(path: Path, data) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(user vectors by contiguous user id (n_users + 1, [K,] D), item vectors (N + 1, D) with a zero
    padding row, active mask (n_users + 1, K) or None) from an --export-vectors file."""
    with np.load(path) as z:
        z = dict(z)
    item_index = {str(r): i for i, r in enumerate(np.asarray(data.item_raw).astype(str))}
    user_index = {str(r): i for i, r in enumerate(np.asarray(data.user_raw).astype(str))}
    items = torch.zeros(data.n_items + 1, z["item_vectors"].shape[1])
    rows = [item_index[r] for r in z["item_ids"].astype(str)]
    items[torch.as_tensor(rows)] = torch.from_numpy(z["item_vectors"]).float()
    uv = torch.from_numpy(z["user_vectors"]).float()
    users = torch.zeros((len(data.user_raw),) + tuple(uv.shape[1:]))
    urows = torch.as_tensor([user_index[r] for r in z["user_ids"].astype(str)])
    users[urows] = uv
    active = None
    if "user_active" in z:
        active = torch.zeros(len(data.user_raw), uv.shape[1], dtype=torch.bool)
        active[urows] = torch.from_numpy(z["user_active"]).bool()
    return users, items, active


def scorer(users: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None):
    """score(batch) -> (b, N + 1): dot products; several interest vectors: the best active one."""
    def score(batch):
        u = users[batch["user"]]  # (b, D) or (b, K, D)
        if u.dim() == 2:
            s = u @ items.T  # (b, D) @ (D, N+1)
        else:
            s = torch.einsum("bkd,nd->bkn", u, items)  # (b, K, N+1)
            s = s.masked_fill(~active[batch["user"]].unsqueeze(-1), float("-inf")).amax(1)
        s[:, 0] = float("-inf")
        return s
    return score


def draw_negatives(split, n: int, weights: np.ndarray | None, seed: int) -> np.ndarray:
    """(U, n) negatives per test user: items the user never interacted with (history or test item),
    drawn uniformly or in proportion to `weights` (N + 1,), with replacement, as the SASRec paper's
    evaluation code draws them (a draw that hits the user's items is drawn again)."""
    rng = np.random.default_rng(seed)
    offsets, seen = split.seen("test")
    rows = np.repeat(np.arange(split.n_users), np.diff(offsets))
    n1 = split.n_items + 1
    banned = np.unique(np.concatenate([rows * n1 + seen, np.arange(split.n_users) * n1 + split.test_items]))
    p = None
    if weights is not None:
        p = weights.astype(np.float64).copy()
        p[0] = 0.0
        p /= p.sum()
    out = np.zeros((split.n_users, n), dtype=np.int64)
    todo = np.arange(split.n_users)
    while len(todo):  # draw 3n per row, keep the first n allowed ones; redraw the rare short rows
        cand = (rng.choice(n1, size=(len(todo), 3 * n), p=p) if p is not None
                else rng.integers(1, n1, size=(len(todo), 3 * n)))
        ok = ~np.isin(todo[:, None] * n1 + cand, banned)  # (t, 3n)
        first = np.argsort(~ok, axis=1, kind="stable")[:, :n]  # allowed draws first, in draw order
        out[todo] = np.take_along_axis(cand, first, axis=1)
        todo = todo[ok.sum(1) < n]
    return out


def sampled_ranks(score, split, negatives: np.ndarray, batch: int = 2048) -> np.ndarray:
    """1-based rank of each test item among itself and its row of `negatives` (ties pessimistic)."""
    out = []
    for s in range(0, split.n_users, batch):
        rows = np.arange(s, min(s + batch, split.n_users))
        b = {"user": torch.from_numpy(split.users[rows]), "row": torch.from_numpy(rows)}
        sc = score(b)  # (b, N + 1)
        t = sc.gather(1, torch.from_numpy(split.test_items[rows])[:, None])  # (b, 1)
        neg = sc.gather(1, torch.from_numpy(negatives[rows]))  # (b, n)
        out.append(((neg >= t).sum(1) + 1).numpy())
    return np.concatenate(out).astype(np.float64)


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=None)
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=VECTORS.npz:RESULT.json",
                        help="a model's exported vectors and the RESULT json of the run that wrote them")
    parser.add_argument("--negatives", type=int, default=100)
    args = parser.parse_args()
    data = Datasets.load(args.data, verbose=True)
    split = Datasets.leave_one_out(data)
    counts = split.item_counts().astype(np.float64)
    uniform = draw_negatives(split, args.negatives, None, args.seed)
    popular = draw_negatives(split, args.negatives, counts, args.seed + 1)

    models = [("popularity (training counts)", None, None)]
    for spec in args.model:
        label, _, files = spec.partition("=")
        vec, _, res = files.rpartition(":")
        if not label or not vec:
            parser.error(f"--model {spec!r}: expected LABEL=VECTORS.npz:RESULT.json")
        models.append((label, Path(vec), Path(res)))

    rows = {}
    for label, vec, res in models:
        if vec is None:
            pop = torch.from_numpy(counts).float()

            def score(batch, pop=pop):
                s = pop.expand(len(batch["user"]), -1).clone()
                s[:, 0] = float("-inf")
                return s
            printed = None
        else:
            score = scorer(*load_vectors(vec, data))
            printed = json.loads(res.read_text())["metrics"]
        full = evaluate_full_ranking(score, split, "test", ks=KS, exclude_seen=True)
        if printed is not None:  # the vectors must be the ones the demo scored its test with
            for k in ("Recall@10", "NDCG@10"):
                if abs(full[k] - printed[k]) > 2e-4:
                    raise SystemExit(f"error: {label}: full-ranking {k} from the vectors is {full[k]:.4f}, "
                                     f"the demo printed {printed[k]:.4f}: not the vectors of that run")
        rows[label] = {
            "full": full,
            "full_seen_kept": evaluate_full_ranking(score, split, "test", ks=KS, exclude_seen=False),
            "sampled_uniform": ranking_metrics(sampled_ranks(score, split, uniform), KS),
            "sampled_popularity": ranking_metrics(sampled_ranks(score, split, popular), KS),
        }
        print(f"{label}: " + ", ".join(f"{p} R@10 {m['Recall@10']:.4f} N@10 {m['NDCG@10']:.4f}"
                                       for p, m in rows[label].items()), flush=True)

    # ties: one constant scorer, pessimistic (here) and optimistic (the target first among equals)
    n_unseen = split.n_items - np.diff(split.seen("test")[0])
    ties = {"pessimistic": ranking_metrics(n_unseen.astype(np.float64), KS),
            "optimistic": ranking_metrics(np.ones(split.n_users), KS)}

    def order(key: str) -> list[str]:
        return sorted(rows, key=lambda m: -rows[m][key]["NDCG@10"])

    orders = {k: order(k) for k in ("full", "full_seen_kept", "sampled_uniform", "sampled_popularity")}
    print_result(model="protocols", data=args.data,
                 protocol="the same test items and vectors under each protocol; see Recall/PROTOCOLS.md",
                 metrics={f"{m}|{p}|{k}": v for m, r in rows.items() for p, mm in r.items()
                          for k, v in mm.items() if k in ("Recall@10", "NDCG@10")},
                 baseline=None, train_seconds=0.0, eval_seconds=0.0, epochs=0, params=0,
                 models=rows, orders=orders, ties_constant_scorer=ties, negatives=args.negatives,
                 seed=args.seed, out=args.out)


if __name__ == "__main__":
    main()
