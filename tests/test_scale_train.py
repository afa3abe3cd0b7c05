"""Utils.tools.scale_train: the row-sparse embedding update is lazy Adam (torch.optim.SparseAdam) on the
full table, the renumbered small table gives the full table's loss, and a run on a small world works
end to end with both schemes of both models."""

import json

import pytest
import torch
from torch import nn

from Utils.tools.scale_train import RowSparseTables, local, main


class Tiny(nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(40, 4, padding_idx=0, sparse=sparse)
        self.lin = nn.Linear(4, 4)

    def loss(self, hist, target):
        u = self.lin(self.emb(hist).mean(1))  # (B, D)
        return -(u * self.emb(target)).sum(1).sigmoid().log().mean() + (u ** 2).mean()


def batches():
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        hist = torch.randint(0, 40, (5, 3), generator=g)
        hist[0, 0] = 0  # padding present
        yield hist, torch.randint(1, 40, (5,), generator=g)


def test_row_sparse_tables_are_sparse_adam_on_the_full_table():
    ref = Tiny(sparse=True)
    opt_ref = [torch.optim.SparseAdam([ref.emb.weight], lr=0.05, eps=1e-12), torch.optim.Adam(ref.lin.parameters(), lr=0.05)]
    ours = Tiny(sparse=False)
    tables = RowSparseTables([ours.emb], lr=0.05, eps=1e-12)
    opt = torch.optim.Adam(ours.lin.parameters(), lr=0.05)
    before = ours.emb.weight.detach().clone()
    for hist, target in batches():
        for o in opt_ref:
            o.zero_grad()
        loss_ref = ref.loss(hist, target)
        loss_ref.backward()
        for o in opt_ref:
            o.step()
        rows = tables.swap(torch.cat([hist.reshape(-1), target]))
        opt.zero_grad()
        loss = ours.loss(local(rows, hist), local(rows, target))
        torch.testing.assert_close(loss, loss_ref)  # renumbered ids, same loss
        loss.backward()
        opt.step()
        tables.step()
        # eps is tiny on both sides: SparseAdam adds it to sqrt(v) before the bias correction, Adam after
        torch.testing.assert_close(ours.emb.weight, ref.emb.weight, atol=1e-6, rtol=1e-5)
    untouched = ~torch.isin(torch.arange(40), torch.cat([h.reshape(-1) for h, _ in batches()]
                                                        + [t for _, t in batches()]))
    assert untouched.any()
    assert torch.equal(ours.emb.weight[untouched], before[untouched])  # rows never read never move
    assert torch.equal(ours.emb.weight[0], before[0])  # padding stays


@pytest.mark.parametrize("model", ["sasrec", "youtubednn"])
def test_a_small_run_trains_and_reports(tmp_path, model, capsys):
    outs = {}
    for scheme in ("sampled", "inbatch"):
        out = tmp_path / f"{model}_{scheme}.json"
        main(["--model", model, "--scheme", scheme, "--scale", "2000", "--time-budget", "60", "--max-steps", "3",
              "--eval-users", "50", "--negatives", "64", "--out", str(out)]
             + (["--popularity-from", str(outs["sampled"])] if scheme == "inbatch" else []))
        outs[scheme] = out
        res = json.loads(out.read_text())
        assert res["steps"] == 3 and res["eval_users"] == 50 and res["peak_rss_mb"] > 0
        assert 0.0 <= res["metrics"]["Recall@50"] <= 1.0
    a, b = (json.loads(outs[s].read_text()) for s in ("sampled", "inbatch"))
    assert a["baseline"]["metrics"] == b["baseline"]["metrics"]  # the same users
