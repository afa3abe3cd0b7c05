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
