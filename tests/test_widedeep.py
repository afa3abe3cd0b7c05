"""Wide & Deep (Cheng et al., DLRS 2016): properties of the paper, checked on
`Classic Models/Ranking/WideDeep/model.py`."""

import itertools

import pytest
import torch

from tests.conftest import model_module

M = model_module("Ranking", "WideDeep")


def all_pairs(dims):
    """Every combination of non-padding ids of two fields, as a (N, 2) batch."""
    combos = list(itertools.product(range(1, dims[0]), range(1, dims[1])))
    return torch.tensor(combos, dtype=torch.long)


def test_cross_product_is_one_id_per_observed_combination():
    """Eq. (2): phi_k(x) = 1 exactly for one combination of the crossed one-hot fields."""
    dims = (4, 6)
    sparse = all_pairs(dims)
    ids, size = M.cross_product_ids(sparse, (0, 1), dims, buckets=1000)
    assert len(set(ids.tolist())) == len(sparse)  # injective: every combination its own weight
    assert ids.min() >= 1 and ids.max() < size
    padded = sparse.clone()
    padded[::2, 1] = 0
    ids_p, _ = M.cross_product_ids(padded, (0, 1), dims, buckets=1000)
    assert (ids_p[::2] == 0).all() and (ids_p[1::2] > 0).all()  # missing when a field is padding


def test_cross_of_large_fields_is_hashed_into_buckets():
    dims = (500, 700, 9)
    g = torch.Generator().manual_seed(0)
    sparse = torch.stack([torch.randint(1, v, (1000,), generator=g) for v in dims], dim=1)
    ids, size = M.cross_product_ids(sparse, (0, 1, 2), dims, buckets=4096)
    assert size == 4096 and ids.min() >= 1 and ids.max() < 4096
    again, _ = M.cross_product_ids(sparse, (0, 1, 2), dims, buckets=4096)
    assert torch.equal(ids, again)  # deterministic
    distinct_pairs = len(set(map(tuple, sparse.tolist())))
    expected = 4095 * (1 - (1 - 1 / 4095) ** distinct_pairs)  # a uniform hash's distinct buckets
    assert len(set(ids.tolist())) > 0.95 * expected


def fit_wide_only(model, sparse, labels, steps=400):
    opt = torch.optim.Adam(model.wide_parameters(), lr=0.1)
    for _ in range(steps):
        loss = model.loss(model.wide(sparse, None), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_wide_part_memorises_an_interaction_only_with_a_cross_product():
    """Memorisation (paper §1): a linear model needs the cross feature to learn 'A and B together'.

    label = (a + b) mod 2 over all pairs: no sum of per-field weights can fit it (its best loss is
    log 2), while one weight per cross-product id fits it exactly.
    """
    dims = (5, 5)
    sparse = all_pairs(dims)
    labels = ((sparse[:, 0] + sparse[:, 1]) % 2).float()
    plain = M.WideDeep(M.WideDeepConfig(field_dims=dims, hidden=(4,)))
    crossed = M.WideDeep(M.WideDeepConfig(field_dims=dims, hidden=(4,), cross_fields=((0, 1),)))
    assert fit_wide_only(plain, sparse, labels) > 0.6
    assert fit_wide_only(crossed, sparse, labels) < 0.05


def test_joint_training_one_loss_updates_both_parts():
    """Joint training, not an ensemble: one logistic loss of the summed logit reaches both parts."""
    model = M.WideDeep(M.WideDeepConfig(field_dims=(5, 6), dense_dim=2, hidden=(8,),
                                        cross_fields=((0, 1),)))
    sparse = torch.tensor([[1, 2], [3, 4], [2, 5]])
    dense = torch.rand(3, 2)
    torch.testing.assert_close(model(sparse, dense),
                               model.wide(sparse, dense) + model.deep(sparse, dense))
    model.loss(model(sparse, dense), torch.tensor([1.0, 0.0, 1.0])).backward()
    for p in model.wide_parameters() + model.deep_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    ids = {id(p) for p in model.wide_parameters()} | {id(p) for p in model.deep_parameters()}
    assert ids == {id(p) for p in model.parameters()}  # the two groups cover the whole model


def test_wide_logit_is_raw_plus_cross_weights_and_a_cross_weight_can_be_read_alone():
    """What the demo's figure reads: Eq. (1)'s wide logit is the sum of the raw-feature weights,
    the cross-product weights and b; a row with only the crossed fields set (the others padding)
    has exactly one non-zero term, the weight of that combination's cross id."""
    dims = (5, 6, 4)
    model = M.WideDeep(M.WideDeepConfig(field_dims=dims, hidden=(4,), cross_fields=((0, 1), (1, 2))))
    with torch.no_grad():
        for p in model.wide_parameters():
            p.normal_()
    sparse = torch.tensor([[1, 2, 3], [4, 5, 1], [2, 0, 3]])
    raw = model.wide_raw(sparse).sum(dim=(1, 2))
    cross = model.wide_cross(model.cross_features(sparse)).sum(dim=(1, 2))
    torch.testing.assert_close(model.wide(sparse, None), raw + cross + model.bias)
    only = torch.tensor([[3, 4, 0]])  # fields 0 and 1 set: cross (0, 1) present, (1, 2) missing
    w = model.wide_cross(model.cross_features(only))[0, :, 0]  # (C,)
    ids, _ = M.cross_product_ids(only, (0, 1), dims, buckets=1 << 20)
    assert w[1] == 0
    torch.testing.assert_close(w[0], model.wide_cross.table.weight[int(ids[0]), 0])


def test_overfits_a_tiny_batch():
    dims = (20, 30, 4)
    model = M.WideDeep(M.WideDeepConfig(field_dims=dims, dense_dim=1, dim=8, hidden=(32,),
                                        cross_fields=((0, 2),)))
    g = torch.Generator().manual_seed(1)
    sparse = torch.stack([torch.randint(1, v, (64,), generator=g) for v in dims], dim=1)
    dense = torch.rand(64, 1, generator=g)
    labels = torch.randint(0, 2, (64,), generator=g).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        loss = model.loss(model(sparse, dense), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_bad_inputs_fail_early():
    with pytest.raises(ValueError, match="distinct fields"):
        M.WideDeepConfig(field_dims=(5, 5), cross_fields=((0, 0),))
    with pytest.raises(ValueError, match="outside"):
        M.WideDeepConfig(field_dims=(5, 5), cross_fields=((0, 2),))
    model = M.WideDeep(M.WideDeepConfig(field_dims=(5, 5), dense_dim=2))
    with pytest.raises(ValueError, match=r"dense must be \(B, 2\)"):
        model(torch.ones(3, 2, dtype=torch.long))


def test_demo_save_then_load_gives_identical_test_metrics(tmp_path):
    """--save after a tiny run, then --load (no flags but the data): training is skipped, the flags
    come from the file, and the test metrics are identical."""
    from tests.test_field_ctr import round_trip

    first, second, out = round_trip("WideDeep", tmp_path)
    assert first["model"] == second["model"] == "Wide&Deep"
    assert first["metrics"] == second["metrics"]
    assert "training skipped" in out and "test metrics equal those of the saving run" in out
    assert second["config"]["hidden"] == "8" and second["loaded_from"].endswith("model.pt")
