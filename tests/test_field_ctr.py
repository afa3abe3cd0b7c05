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


def test_without_a_train_file_the_validation_file_is_split_and_test_is_kept(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(rng.choice([-1, 1])), [int(rng.integers(0, 5)), 5 + int(rng.integers(0, 7))])
            for _ in range(200)]
    write_libfm(tmp_path, "toy.validation.libfm", rows[:150])
    write_libfm(tmp_path, "toy.test.libfm", rows[150:])
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
