"""Datasets/field_ctr.py: the split the field-interaction CTR demos train and report on."""

import numpy as np
import pytest
import torch

import Datasets
from Datasets.field_ctr import build_field_ctr
from tests.conftest import shared_path


def write_libfm(folder, name, rows):
    (folder / name).write_text("".join(f"{y} " + " ".join(f"{f}:1" for f in fs) + "\n"
                                       for y, fs in rows))


def toy_libfm_split(folder, n_rows, n_validation, n_users, n_items):
    """Random (user, item) click rows written as a validation file and a test file (no train
    file); returns the rows."""
    rng = np.random.default_rng(0)
    rows = [(int(rng.choice([-1, 1])), [int(rng.integers(0, n_users)),
                                        n_users + int(rng.integers(0, n_items))])
            for _ in range(n_rows)]
    write_libfm(folder, "toy.validation.libfm", rows[:n_validation])
    write_libfm(folder, "toy.test.libfm", rows[n_validation:])
    return rows


def test_without_a_train_file_the_validation_file_is_split_and_test_is_kept(tmp_path):
    rows = toy_libfm_split(tmp_path, 200, 150, n_users=5, n_items=7)
    ctr = build_field_ctr(Datasets.load(f"libfm:{tmp_path}"), holdout=0.2, seed=0)
    assert (len(ctr.train), len(ctr.valid), len(ctr.test)) == (120, 30, 50)
    labels = np.array([1.0 if y > 0 else 0.0 for y, _ in rows], dtype=np.float32)
    np.testing.assert_array_equal(ctr.test.tensors["label"].numpy(), labels[150:])
    both = torch.cat([ctr.train.tensors["label"], ctr.valid.tensors["label"]])
    assert both.sum().item() == labels[:150].sum()
    # one context x every item: only the item field changes
    sparse, dense = ctr.candidate_rows(ctr.test.tensors["sparse"][0], torch.arange(1, 4))
    assert dense is None and (sparse[:, 1] == torch.arange(1, 4)).all()
    assert (sparse[:, 0] == ctr.test.tensors["sparse"][0, 0]).all()


@pytest.mark.realdata
def test_frappe_protocol_uses_the_validation_file_for_training_and_the_test_file_once():
    path = shared_path("frappe")
    ctr = build_field_ctr(Datasets.load(f"libfm:{path}"), holdout=0.1, seed=0)
    assert len(ctr.train) + len(ctr.valid) == 57_722 and len(ctr.test) == 28_860
    assert ctr.field_names[:2] == ["user", "item"] and len(ctr.field_dims) == 10


def test_auc_by_seen_pair_splits_test_positives_by_training_clicks(tmp_path):
    """Utils/field_ctr_demo.auc_by_seen_pair: positives whose (user, item) pair was clicked in
    training vs the rest, each against all test negatives, equal scikit-learn's AUC; the two AUCs
    weighted by their positives give the overall AUC."""
    from sklearn.metrics import roc_auc_score

    from Utils.field_ctr_demo import auc_by_seen_pair

    toy_libfm_split(tmp_path, 400, 300, n_users=6, n_items=8)
    ctr = build_field_ctr(Datasets.load(f"libfm:{tmp_path}"), holdout=0.2, seed=0)
    ctr.field_names[0] = "user"
    item_score = torch.randn(ctr.field_dims[ctr.item_field],
                             generator=torch.Generator().manual_seed(0))

    class ItemScore(torch.nn.Module):
        def forward(self, sparse, dense=None):
            return item_score[sparse[:, ctr.item_field]]

    got = auc_by_seen_pair(ItemScore(), ctr, torch.device("cpu"))
    tr, y_tr = ctr.train.tensors["sparse"].numpy(), ctr.train.tensors["label"].numpy()
    clicked = {(int(a), int(b)) for a, b in tr[y_tr > 0][:, [0, ctr.item_field]]}
    te, y = ctr.test.tensors["sparse"].numpy(), ctr.test.tensors["label"].numpy()
    seen = np.array([(int(a), int(b)) in clicked for a, b in te[:, [0, ctr.item_field]]])
    p = torch.sigmoid(item_score[torch.as_tensor(te[:, ctr.item_field])]).numpy()
    for name, group in (("seen pair", (y > 0) & seen), ("new pair", (y > 0) & ~seen)):
        assert got[name]["positives"] == group.sum() > 0
        rows = group | (y == 0)
        assert got[name]["AUC"] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    mix = sum(v["AUC"] * v["positives"] for v in got.values()) / (y > 0).sum()
    assert mix == pytest.approx(roc_auc_score(y, p))
    ctr.field_names[0] = "f0"
    assert auc_by_seen_pair(ItemScore(), ctr, torch.device("cpu")) is None
