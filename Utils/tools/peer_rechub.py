"""Side-by-side speed and quality of torch-rechub's YoutubeDNN / MIND on our leave-one-out split.

torch-rechub is a *peer* library, not a dependency: install it in a scratch place, never into
requirements, and put it on the path only for this command, e.g.

    pip install --target /tmp/rechub_pkgs --no-deps torch-rechub==0.9.0
    PYTHONPATH=/tmp/rechub_pkgs python -m Utils.tools.peer_rechub \\
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --model mind --epochs 2 --threads 1

It trains the peer model with its own `MatchTrainer` (list-wise softmax over the positive and
`--negatives` items drawn from popularity^0.75, as its matching examples do) on exactly the
next-item examples our demos train on (`LOOSplit.next_item_examples(50, max_per_user=50)`), times
`train_one_epoch` alone (samples/s), then scores all users on the test split with our
`evaluate_full_ranking` (seen items excluded, pessimistic ties; for MIND the user's score of an item
is its best interest, the paper's serving rule). Prints one RESULT line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import Datasets
from Utils.evaluation import evaluate_full_ranking
from Utils.io import add_common_args, print_result
from Utils.training import count_params, cpu_setup, set_seed


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                             epochs=2, batch_size=256, lr=1e-3)
    parser.add_argument("--model", required=True, choices=["youtubednn", "mind"])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--negatives", type=int, default=3, help="negatives per sample (peer's example: 3)")
    parser.add_argument("--temperature", type=float, default=0.02, help="peer's example: 0.02")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    try:
        from torch_rechub.basic.features import SequenceFeature, SparseFeature
        from torch_rechub.models.matching import MIND, YoutubeDNN
        from torch_rechub.trainers import MatchTrainer
        from torch_rechub.utils.data import TorchDataset
    except ImportError as e:
        raise SystemExit(f"torch-rechub is not importable ({e}); install it in a scratch folder and "
                         "set PYTHONPATH, see this module's docstring") from e
    cpu_setup(args.threads)
    set_seed(args.seed)

    split = Datasets.leave_one_out(Datasets.load(args.data, verbose=True))
    ex = split.next_item_examples(args.max_len, max_per_user=50, seed=args.seed)
    n_items, n_users = split.n_items, split.n_users
    rng = np.random.default_rng(args.seed)
    p = split.item_counts()[1:].astype(np.float64) ** 0.75
    neg = rng.choice(np.arange(1, n_items + 1), size=(len(ex["target"]), args.negatives),
                     p=p / p.sum())
    x = {"user_id": ex["row"].numpy() + 1, "hist_item_id": ex["history"].numpy(),
         "item_id": ex["target"].numpy(), "neg_items": neg}
    y = np.zeros(len(ex["target"]), dtype=np.int64)  # the positive is class 0 of [pos, negs]
    loader = torch.utils.data.DataLoader(TorchDataset(x, y), batch_size=args.batch_size,
                                         shuffle=True, num_workers=0)

    user = [SparseFeature("user_id", n_users + 1, embed_dim=args.dim)]
    item = [SparseFeature("item_id", n_items + 1, embed_dim=args.dim)]
    hist = SequenceFeature("hist_item_id", n_items + 1, embed_dim=args.dim, shared_with="item_id",
                           pooling="mean" if args.model == "youtubednn" else "concat",
                           padding_idx=0)
    negs = [SequenceFeature("neg_items", n_items + 1, embed_dim=args.dim, pooling="concat",
                            shared_with="item_id")]
    if args.model == "youtubednn":
        model = YoutubeDNN(user + [hist], item, negs, user_params={"dims": [128, args.dim]},
                           temperature=args.temperature)
    else:
        model = MIND(user, [hist], item, negs, max_length=args.max_len,
                     temperature=args.temperature, interest_num=4)
    trainer = MatchTrainer(model, mode=2, optimizer_params={"lr": args.lr, "weight_decay": 1e-6},
                           n_epoch=args.epochs, device="cpu", model_path="/tmp")
    epoch_seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        trainer.train_one_epoch(loader)
        epoch_seconds.append(time.perf_counter() - t0)
        print(f"epoch {len(epoch_seconds)}: {epoch_seconds[-1]:.1f}s, "
              f"{len(y) / epoch_seconds[-1]:,.0f} samples/s", flush=True)

    model.eval()
    with torch.no_grad():
        model.mode = "item"
        items = model({"item_id": torch.arange(n_items + 1)})  # (N+1, d)
        model.mode = "user"

        def score(batch):
            u = model({"user_id": batch["row"] + 1, "hist_item_id": batch["history"]})
            s = u @ items.T  # (b, N+1) or (b, K, N+1)
            return s.amax(1) if s.dim() == 3 else s

        t0 = time.perf_counter()
        metrics = evaluate_full_ranking(score, split, "test", max_len=args.max_len)
        eval_seconds = time.perf_counter() - t0
    print_result(model=f"torch-rechub {args.model}", data=args.data,
                 protocol="leave-one-out, full ranking, seen items excluded, test split",
                 metrics=metrics, baseline=None, train_seconds=sum(epoch_seconds),
                 eval_seconds=eval_seconds,
                 epochs=args.epochs, params=count_params(model),
                 out=args.out, samples_per_second=len(y) * args.epochs / sum(epoch_seconds),
                 epoch_seconds=epoch_seconds, train_examples=len(y),
                 threads=torch.get_num_threads(), config=vars(args))


if __name__ == "__main__":
    main()
