"""DIN (Zhou et al., KDD 2018): the paper's properties, on `Classic Models/Ranking/DIN/model.py`."""


import pytest
import torch

from tests.conftest import model_module

din = model_module("Ranking", "DIN")
VOCAB = (50, 8)  # item id, category id


def make_model(pooling="attention", **kw):
    torch.manual_seed(0)
    return din.DIN(item_vocab_sizes=VOCAB, dim=8, pooling=pooling, **kw)


def random_batch(B=16, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, VOCAB[0], (B, L + 1), generator=g)
    cats = items % (VOCAB[1] - 1) + 1
    ids = torch.stack([items, cats], -1)  # (B, L+1, 2)
    history, target = ids[:, :-1].clone(), ids[:, -1].clone()
    history[:B // 2, :2] = 0  # left padding for half of the rows
    return target, history


def warm_up(model, target, history):
    """One train-mode pass so Dice's running statistics are not the (0, 1) defaults."""
    model.train()
    with torch.no_grad():
        model(target, history)
    model.eval()


def test_output_changes_with_target():
    model = make_model()
    target, history = random_batch()
    warm_up(model, target, history)
    other = target.clone()
    other[:, 0] = (other[:, 0] % (VOCAB[0] - 1)) + 1  # a different candidate item
    with torch.no_grad():
        w1, w2 = model.activation_weights(target, history), model.activation_weights(other, history)
        u1, u2 = model.user_interest(target, history), model.user_interest(other, history)
    assert not torch.allclose(w1, w2), "activation weights must depend on the candidate (Eq. 3)"
    assert not torch.allclose(u1, u2), "DIN's user vector must vary with the candidate"


def test_base_model_user_vector_ignores_target_and_pools():
    for pooling in ("sum", "mean"):
        model = make_model(pooling)
        target, history = random_batch()
        other = target.flip(0)
        with torch.no_grad():
            u1, u2 = model.user_interest(target, history), model.user_interest(other, history)
            emb = model.embed_items(history)  # (B, L, 2D)
        assert torch.allclose(u1, u2), "the base model's user vector ignores the candidate"
        n = (history[..., 0] != 0).sum(1, keepdim=True).float()
        expect = emb.sum(1) if pooling == "sum" else emb.sum(1) / n
        assert torch.allclose(u1, expect, atol=1e-6)


def test_weights_are_not_normalised():
    """Duplicating every behaviour doubles DIN's user vector; a softmax would leave it unchanged."""
    model = make_model()
    target, history = random_batch()
    warm_up(model, target, history)
    with torch.no_grad():
        w = model.activation_weights(target, history)
        u = model.user_interest(target, history)
        u2 = model.user_interest(target, torch.cat([history, history], 1))
    assert not torch.allclose(w.sum(1), torch.ones(w.shape[0]), atol=1e-3)
    assert torch.allclose(u2, 2 * u, atol=1e-5)


def test_padding_gets_zero_weight_and_changes_nothing():
    model = make_model()
    target, history = random_batch()
    warm_up(model, target, history)
    padded = torch.cat([torch.zeros_like(history[:, :3]), history], 1)  # 3 more padded slots
    with torch.no_grad():
        w = model.activation_weights(target, padded)
        assert (w[padded[..., 0] == 0] == 0).all()
        assert torch.allclose(model(target, padded), model(target, history), atol=1e-6)


def test_dice_adapts_its_rectification_point_and_reduces_to_prelu():
    torch.manual_seed(0)
    dice = din.Dice(4)
    s = torch.randn(256, 4)
    dice.alpha.data.fill_(0.25)
    dice.train()
    # Training: p(s) uses the batch mean/variance, so shifting every input by c shifts the
    # rectification point with it: f(s + c) - f(s) is linear in the new inputs, not a fixed kink.
    p = torch.sigmoid((s - s.mean(0)) / s.var(0, unbiased=False).add(1e-8).sqrt())
    assert torch.allclose(dice(s), p * s + (1 - p) * 0.25 * s, atol=1e-5)  # Eq. (9)
    # Inference with E[s] = 0 and Var[s] -> 0: p is a hard step at 0, i.e. PReLU (Eq. 8).
    dice.eval()
    dice.norm.running_mean.zero_()
    dice.norm.running_var.zero_()
    prelu = torch.where(s > 0, s, 0.25 * s)
    assert torch.allclose(dice(s), prelu, atol=1e-4)


def test_mini_batch_aware_regulariser_touches_only_batch_ids():
    freqs = [torch.arange(VOCAB[0]).float() + 1, torch.full((VOCAB[1],), 4.0)]
    model = make_model(mba_lambda=0.1, id_frequencies=freqs)
    target, history = random_batch()
    reg = model.mba_regularization(target, history)
    reg.backward()
    seen = torch.unique(torch.cat([target[:, 0], history[..., 0].flatten()]))
    seen = seen[seen != 0]
    w = model.item_embeddings[0].weight
    expect_item = (w[seen].pow(2).sum(1) / freqs[0][seen]).sum()
    touched = w.grad.abs().sum(1) != 0
    assert touched[seen].all() and touched.sum() == len(seen)  # Eq. (6): alpha_mj = 0 rows kept
    cats = torch.unique(torch.cat([target[:, 1], history[..., 1].flatten()]))
    cats = cats[cats != 0]
    expect_cat = (model.item_embeddings[1].weight[cats].pow(2).sum(1) / 4.0).sum()
    assert torch.allclose(reg, expect_item + expect_cat)


@pytest.mark.parametrize("pooling", ["attention", "sum"])
def test_overfits_a_tiny_batch(pooling):
    model = make_model(pooling, mlp_hidden=(32,), attention_hidden=(16,))
    target, history = random_batch(B=32, seed=1)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(2)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(model(target, history), labels)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        din.DIN(item_vocab_sizes=(1,))
    with pytest.raises(ValueError):
        din.DIN(item_vocab_sizes=(10,), pooling="max")
    model = make_model()
    target, history = random_batch()
    with pytest.raises(ValueError):
        model(target[:, :1], history)


def test_behavior_ctr_builder_follows_the_din_recipe():
    """Datasets/behavior_ctr.py: positive = the real next item, negative = an item the user never
    touched, same (earlier-only) behaviours; leave-one-out stages."""
    import numpy as np
    import pandas as pd

    from Datasets import leave_one_out, make_rec_data
    from Datasets.behavior_ctr import build_behavior_ctr

    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(1, 31)
            for t, i in enumerate(rng.choice(np.arange(1, 41), size=int(rng.integers(4, 9)),
                                             replace=False))]
    data = make_rec_data("toy", pd.DataFrame(rows, columns=["user", "item", "timestamp"]),
                         sort_ids=True)
    split = leave_one_out(data)
    sets = build_behavior_ctr(split, max_len=5, seed=3)
    seqs = {int(u): g["item"].tolist() for u, g in data.interactions.groupby("user")}
    for stage, ds in sets.items():
        t = {k: v.numpy() for k, v in ds.tensors.items()}
        assert (t["label"][0::2] == 1).all() and (t["label"][1::2] == 0).all()
        assert (t["history"][0::2] == t["history"][1::2]).all()  # a pair shares its behaviours
        for s in range(0, len(t["label"]), 2):
            seq, hist = seqs[int(t["user"][s])], [i for i in t["history"][s] if i]
            pos = seq.index(int(t["target"][s]))
            assert hist == seq[max(0, pos - 5):pos]  # exactly the items before the positive
            assert int(t["target"][s + 1]) not in seq  # the negative was never touched
            if stage == "test":
                assert pos == len(seq) - 1
            elif stage == "valid":
                assert pos == len(seq) - 2
            else:
                assert 1 <= pos <= len(seq) - 3


def test_auc_by_positive_count_groups_pairs_by_the_positives_training_clicks():
    """Utils/behavior_demo.auc_by_positive_count: each bucket's AUC equals scikit-learn's on the
    pairs whose positive was a clicked training target that many times; the pairs' positive and
    negative stay together."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from Datasets.BaseDatasets import TensorDictDataset
    from Utils.loops.behavior_demo import BehaviorCTR, auc_by_positive_count

    n_items, rng = 30, np.random.default_rng(1)
    clicks = np.repeat(np.arange(1, 11), np.arange(1, 11) ** 2 // 4)  # item i clicked ~i^2/4 times
    train_target = np.stack([clicks, rng.integers(11, n_items + 1, len(clicks))], 1).reshape(-1)
    train = TensorDictDataset({"target": torch.as_tensor(train_target),
                               "label": torch.tensor([1.0, 0.0]).repeat(len(clicks))})
    S = 40
    test_target = np.stack([rng.integers(1, 16, S), rng.integers(11, n_items + 1, S)], 1)
    test_target = test_target.reshape(-1)  # rows 2s: positive, 2s+1: its negative
    test = TensorDictDataset({"target": torch.as_tensor(test_target),
                              "history": torch.zeros(2 * S, 3, dtype=torch.long),
                              "label": torch.tensor([1.0, 0.0]).repeat(S)})
    score_of_item = torch.as_tensor(rng.normal(size=n_items + 1), dtype=torch.float32)

    class ItemScore(torch.nn.Module):  # logit = a fixed score per candidate item
        def forward(self, target, history):
            return score_of_item[target[:, 0]]

    fields = torch.arange(n_items + 1)[:, None]
    b = BehaviorCTR(None, None, fields, (n_items + 1,), {"train": train, "test": test}, "", 0)
    got = auc_by_positive_count(ItemScore(), b, "test", torch.device("cpu"))
    count = np.bincount(clicks, minlength=n_items + 1)[test_target[0::2]]
    prob = torch.sigmoid(score_of_item[test_target]).numpy()
    label = np.tile([1.0, 0.0], S)
    for name, (lo, hi) in zip(got, ((0, 0), (1, 4), (5, 19), (20, 10**9))):
        pairs = (count >= lo) & (count <= hi)
        assert got[name]["pairs"] == pairs.sum() > 0
        rows = np.repeat(pairs, 2)
        assert got[name]["AUC"] == pytest.approx(roc_auc_score(label[rows], prob[rows]))
    assert sum(v["pairs"] for v in got.values()) == S
    # rows that are not (positive, negative) pairs: no breakdown
    b.sets["test"] = TensorDictDataset(dict(test.tensors, label=torch.ones(2 * S)))
    assert auc_by_positive_count(ItemScore(), b, "test", torch.device("cpu")) is None


def test_trains_on_a_batch_of_one_and_on_one_behaviour():
    """Dice's batch statistics need two samples: a training batch of one row (MLP), or a batch that
    holds one real behaviour in all (activation unit), is normalised with the moving averages, as
    at test time, and leaves them unchanged; nn.BatchNorm1d alone raised "Expected more than 1
    value per channel"."""
    model = make_model()
    target, history = random_batch(B=8)
    warm_up(model, target, history)
    one_target = target[:1]
    one_history = torch.zeros_like(history[:1])
    one_history[0, -1] = history[3, -1]  # a single real behaviour
    stats = [m.norm.running_mean.clone() for m in model.modules() if isinstance(m, din.Dice)]
    model.eval()
    with torch.no_grad():
        expect = model(one_target, one_history)
    model.train()
    logits = model(one_target, one_history)
    model.loss(logits, torch.ones(1)).backward()
    assert torch.allclose(logits, expect, atol=1e-6)  # the moving averages, as at test time
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    after = [m.norm.running_mean for m in model.modules() if isinstance(m, din.Dice)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))
    # two rows, one of them without behaviours: the activation unit sees one sample, the MLP two
    two_history = torch.cat([one_history, torch.zeros_like(one_history)])
    logits = model(target[:2], two_history)
    model.loss(logits, torch.ones(2)).backward()
    assert torch.isfinite(logits).all()


def test_out_of_range_id_is_a_clear_error():
    model = din.DIN(item_vocab_sizes=VOCAB, context_vocab_sizes=(3,), dim=4)
    target, history = random_batch(B=2)
    bad = target.clone()
    bad[1, 1] = VOCAB[1]  # the category table's size: would read past the table
    with pytest.raises(ValueError, match=r"target, field 1: id 8 .*0\.\.7"):
        model(bad, history, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"context, field 0: id 3 .*0\.\.2"):
        model(target, history, torch.full((2, 1), 3))


def test_demo_round_trip_trains_on_a_last_batch_of_one_and_recommends(tmp_path):
    """The demo on a tiny seqtxt file: 366 training rows in batches of 365 end with a batch of one
    row; --save, then --load (no training) gives identical metrics; --recommend prints a top-10."""
    from tests.conftest import result_of
    from tests.test_bad_input_ranking import run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "data", attributes=True)
    flags = ["--data", f"seqtxt:{data}", "--epochs", "1", "--dim", "4", "--batch-size", "365",
             "--threads", "1"]
    code, out, err, _ = run_demo("DIN", [*flags, "--save", str(tmp_path / "din.pt")])
    assert code == 0, err[-2000:]
    first = result_of(out)
    assert first["rows"]["train"] % 365 == 1
    code, out, err, _ = run_demo("DIN", [*flags, "--load", str(tmp_path / "din.pt"),
                                         "--recommend", "7"])
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"]
    assert again["base_model"]["metrics"] == first["base_model"]["metrics"]
    assert again["train_seconds"] == 0.0
    assert "top-10 recommendations:" in out and "  10. " in out
