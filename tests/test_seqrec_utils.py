"""Utils.loops.seqrec: the length-bucketed batches the SASRec/HSTU demos train on."""

import torch

import Datasets
from Utils.loops.seqrec import length_bucketed_batches


def test_length_bucketed_batches_cover_every_row_once_and_cut_only_padding():
    g = torch.Generator().manual_seed(0)
    n_users, width = 37, 9
    lengths = torch.randint(0, width + 1, (n_users,), generator=g)
    seqs = torch.zeros(n_users, width, dtype=torch.long)
    for u, n in enumerate(lengths.tolist()):  # left-padded rows with n real items
        if n:
            seqs[u, -n:] = torch.randint(1, 50, (n,), generator=g)
    seqs[:, -1] += 1000 * torch.arange(n_users) + 1000  # tag each row so it can be found again
    ds = Datasets.TensorDictDataset({"seq": seqs})
    seen, spans = [], []
    for batch in length_bucketed_batches(ds, (seqs != 0).sum(1), batch_size=8,
                                          gen=torch.Generator().manual_seed(1)):
        b = batch["seq"]
        real = (b != 0).sum(1)
        assert b.shape[1] == max(2, int(real.max()))  # cut to the longest row, never below 2
        rows = (b[:, -1] // 1000 - 1).tolist()
        for r, row in zip(rows, b):
            assert torch.equal(row[row != 0], seqs[r][seqs[r] != 0])  # no real item was cut
        seen += rows
        spans.append((int(real.min()), int(real.max())))
    assert sorted(seen) == list(range(n_users))  # every row exactly once per epoch
    spans.sort()
    # bucketing: batches hold consecutive lengths, so no two batches' length ranges interleave
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
