"""The official-GRU4Rec side-by-side driver (`Utils/tools/peer_gru4rec.py`): what it hands their code is
exactly our split — checked without the official code — and, when a scratch copy of the official code is
named by GRU4REC_OFFICIAL_DIR, that it reads their model as their own evaluation does."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import Datasets
from Utils.tools import peer_gru4rec as peer


@pytest.fixture(scope="module")
def split():
    return Datasets.leave_one_out(Datasets.load("synthetic"))


def test_every_interaction_lands_in_exactly_one_of_train_valid_test_in_time_order(split):
    frames = peer.export_split(split, seed=3)
    train, valid, test = frames["train"], frames["valid"], frames["test"]
    assert len(train) == len(split.train_items) and len(valid) == len(test) == 2 * split.n_users
    # the whole sequence of every user: training events (in Time order), then validation, then test
    data = Datasets.load("synthetic")
    full = data.interactions.groupby("user")["item"].apply(list)
    ordered = train.sort_values(["SessionId", "Time"])
    assert np.array_equal(ordered.index.to_numpy(), train.index.to_numpy())  # already in time order
    got = ordered.groupby("SessionId")["ItemId"].apply(list)
    for r, u in enumerate(split.users):
        assert got[u] + [split.valid_items[r], split.test_items[r]] == full[u]
    # the two-event sessions their batch_eval reads: [last training, validation], [validation, test]
    assert np.array_equal(valid["ItemId"].to_numpy()[1::2], split.valid_items)
    assert np.array_equal(test["ItemId"].to_numpy()[0::2], split.valid_items)
    assert np.array_equal(test["ItemId"].to_numpy()[1::2], split.test_items)
    # validation and test events come after the session's training events
    last_time = train.groupby("SessionId")["Time"].max().loc[split.users].to_numpy()
    assert (valid["Time"].to_numpy()[1::2] > last_time).all()
    assert (test["Time"].to_numpy()[1::2] > test["Time"].to_numpy()[0::2]).all()
    assert (test["Time"].to_numpy()[0::2] > last_time).all()
    # their iterator orders sessions by first event: a permutation drawn from the seed, no overlap
    first = train.groupby("SessionId")["Time"].agg(["min", "max"]).sort_values("min")
    assert (first["min"].to_numpy()[1:] > first["max"].to_numpy()[:-1]).all()
    other = peer.export_split(split, seed=4)["train"].groupby("SessionId")["Time"].min()
    assert not np.array_equal(np.argsort(first["min"].sort_index().to_numpy()),
                              np.argsort(other.to_numpy()))


def test_presets_are_their_paramfile_and_our_ledger_row():
    assert peer.parse_params("retailrocket")["layers"] == [224]
    assert peer.parse_params("retailrocket")["momentum"] == 0.4
    ledger = peer.parse_params("ledger")
    assert (ledger["layers"], ledger["batch_size"], ledger["bpreg"]) == ([100], 64, 1.0)
    assert peer.parse_params("loss=cross-entropy,logq=1.0") == {"loss": "cross-entropy", "logq": "1.0"}
    with pytest.raises(SystemExit, match="--params"):
        peer.parse_params("nonsense")


OFFICIAL = os.environ.get("GRU4REC_OFFICIAL_DIR", "")


@pytest.mark.skipif(not (OFFICIAL and (Path(OFFICIAL) / "gru4rec_pytorch.py").is_file()),
                    reason="set GRU4REC_OFFICIAL_DIR to a scratch copy of hidasib/GRU4Rec_PyTorch_Official")
def test_scores_read_their_model_as_their_own_evaluation_does(split):
    g4r, evaluation = peer.import_official(OFFICIAL)
    frames = peer.export_split(split, seed=0)
    gru = g4r.GRU4Rec(device=torch.device("cpu"))
    gru.set_params(**peer.parse_params("ledger"))
    gru.n_epochs = 0  # the untrained model is enough: the path, not the accuracy, is checked
    gru.fit(frames["train"], compatibility_mode=False)
    maps = peer.item_maps(gru, split.n_items)
    # padding on the left changes nothing; the state equals their forward run on one user alone
    rows = np.arange(5)
    hist = peer.histories(split, "test", rows)
    scores = peer.official_scores(gru, hist, *maps, split.n_items)
    for r in rows:
        alone = hist[r][hist[r] != 0].unsqueeze(0)
        assert torch.allclose(scores[r], peer.official_scores(gru, alone, *maps, split.n_items)[0],
                              atol=1e-5)
    theirs = peer.their_metrics(gru, evaluation, frames["test"])
    known = np.flatnonzero((maps[0][torch.from_numpy(split.valid_items)] >= 0).numpy()
                           & (maps[0][torch.from_numpy(split.test_items)] >= 0).numpy())
    ours = peer.our_metrics(gru, split, "test", maps, last_item_only=True, exclude_seen=False,
                            users=known)
    for k in (5, 10, 20):
        assert ours[f"Recall@{k}"] == pytest.approx(theirs[f"Recall@{k}"], abs=1e-9)


@pytest.mark.skipif(not (OFFICIAL and (Path(OFFICIAL) / "gru4rec_pytorch.py").is_file()),
                    reason="set GRU4REC_OFFICIAL_DIR to a scratch copy of hidasib/GRU4Rec_PyTorch_Official")
def test_a_training_step_of_ours_with_the_official_cell_is_their_step():
    """Their GRU4RecModel + IndexedAdagradM + BPR-max, and ours with cell="official" and the same
    weights, take the same steps: four full steps (dropout on, the same random masks), then a step of
    the end of an epoch where 3 of 8 slots are left: their batch shrinks to 3 rows and divides the row
    sum by 8; ours keeps 8 slots, 5 empty, with reduction="slot"."""
    from tests.conftest import model_module
    from Utils.training import AdagradMomentum

    g4r, _ = peer.import_official(OFFICIAL)
    gru = model_module("Recall", "GRU4Rec")
    N, D, B, S = 60, 16, 8, 24
    torch.manual_seed(0)
    their = g4r.GRU4RecModel(N, [D], 0.5, 0.05, 0, True)
    ours = gru.GRU4Rec(gru.GRU4RecConfig(n_items=N, dim=D, loss="bpr_max", bpreg=1.95, n_sample=S,
                                         dropout_embed=0.5, dropout_hidden=0.05, cell="official",
                                         sparse=True))
    with torch.no_grad():
        ours.item_embedding.weight[1:] = their.Wy.weight
        ours.item_bias[1:] = their.By.weight
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours.layers[0].cell, name).copy_(getattr(their.G[0], name))
    wrap = g4r.GRU4Rec(device=torch.device("cpu"), bpreg=1.95, elu_param=0.5, batch_size=B)
    opt_t = g4r.IndexedAdagradM(their.parameters(), 0.05, 0.4)
    opt_o = AdagradMomentum(ours.parameters(), lr=0.05, momentum=0.4, eps=1e-6)
    H, hidden = [torch.zeros(B, D)], torch.zeros(1, B, D)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        rows = B if step < 4 else 3
        x, y = torch.randint(0, N, (rows,), generator=g), torch.randint(0, N, (rows,), generator=g)
        sample = torch.randint(0, N, (S,), generator=g)
        training = rows == B  # the shrunk step runs without dropout (the masks' shapes differ)
        their.train(training)
        ours.train(training)
        if rows < B:
            H[0] = H[0][:rows].detach()
        H[0] = H[0].detach()
        their.zero_grad()
        torch.manual_seed(100 + step)
        R = their.forward(x, H, torch.cat([y, sample]), training=training)
        loss_t = wrap.bpr_max_loss_with_elu(R, torch.cat([y, sample]), rows) / B
        loss_t.backward()
        opt_t.step()
        items = torch.zeros(B, 1, dtype=torch.long)
        targets = torch.zeros(B, 1, dtype=torch.long)
        items[:rows, 0], targets[:rows, 0] = x + 1, y + 1
        opt_o.zero_grad()
        torch.manual_seed(100 + step)
        loss_o, hidden = ours.loss(items, targets, hidden=hidden, negatives=sample + 1,
                                   return_hidden=True)
        loss_o.backward()
        opt_o.step()
        assert float(loss_o.detach()) == pytest.approx(float(loss_t.detach()), abs=1e-6)
        torch.testing.assert_close(ours.item_embedding.weight[1:], their.Wy.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.item_bias[1:], their.By.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.layers[0].cell.weight_hh, their.G[0].weight_hh, atol=1e-6, rtol=0)
        torch.testing.assert_close(hidden[0, :rows], H[0], atol=1e-6, rtol=0)
