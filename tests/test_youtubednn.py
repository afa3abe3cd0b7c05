"""Properties of YoutubeDNN (Covington et al., RecSys 2016) that the paper implies.

- sampled softmax with log-Q correction is the full softmax cross-entropy of Eq. (1) when the "sample" is
  the whole corpus, and the correction removes most of the bias of a popularity-skewed sample;
- with negatives sampled by popularity, the corrected logits keep the popularity order of the softmax,
  the uncorrected ones lose it;
- padding (id 0) changes neither the user vector nor the scores; a padding target is refused;
- the example age is a real input and serving (no age) equals age 0;
- the model overfits a tiny batch.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module

ytd = model_module("Recall", "YoutubeDNN")
N_ITEMS, N_CATS = 30, 7


def make_model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ytd.YoutubeDNNConfig(
        n_items=N_ITEMS, dim=8, bag_sizes={"category": N_CATS}, user_feature_sizes=(3,),
        hidden=(16,), **kw,
    )
    return ytd.YoutubeDNN(config=cfg)


def inputs(history, cats, age=None):
    B = history.shape[0]
    return dict(history=history, bags={"category": cats},
                user_features=(torch.arange(B) % 3).unsqueeze(1), example_age=age)


def test_sampled_softmax_equals_full_softmax_on_whole_corpus():
    model = make_model()
    g = torch.Generator().manual_seed(1)
    u = torch.randn(5, 8, generator=g)
    target = torch.tensor([1, 7, 30, 12, 7])
    corpus = torch.arange(1, N_ITEMS + 1)  # the sample is every item once: inclusion probability 1
    full = F.cross_entropy(u @ model.item_tower()[1:].T, target - 1)  # softmax of Eq. (1)
    for log_q in (0.0, math.log(1.0 / N_ITEMS)):  # any constant Q cancels
        sampled = model.loss(
            user_vec=u, target=target, negatives=corpus,
            log_q_target=torch.full((5,), log_q), log_q_negatives=torch.full((N_ITEMS,), log_q),
        )
        torch.testing.assert_close(sampled, full)


def test_log_q_correction_undoes_sampling_frequency():
    """An item drawn c times, each copy corrected by log c (its expected count), weighs as one copy.

    This is what the correction is for: a popular item that Q draws often must not be penalised more in
    the softmax's denominator than a rare one.
    """
    model = make_model()
    u = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 2, 3])
    once = model.loss(user_vec=u, target=target, negatives=torch.tensor([5, 9]),
                      log_q_target=torch.zeros(3), log_q_negatives=torch.zeros(2))
    drawn = torch.tensor([5, 5, 5, 9, 9])  # 5 drawn three times, 9 twice
    log_counts = torch.log(torch.tensor([3.0, 3.0, 3.0, 2.0, 2.0]))
    corrected = model.loss(user_vec=u, target=target, negatives=drawn,
                           log_q_target=torch.zeros(3), log_q_negatives=log_counts)
    raw = model.loss(user_vec=u, target=target, negatives=drawn,
                     log_q_target=torch.zeros(3), log_q_negatives=torch.zeros(5))
    torch.testing.assert_close(corrected, once)
    assert raw > once + 0.1


def test_accidental_hits_are_removed():
    model = make_model()
    u = torch.randn(2, 8)
    target = torch.tensor([3, 4])
    with_hit = model.loss(user_vec=u, target=target, negatives=torch.tensor([3, 5]),
                          log_q_target=torch.zeros(2), log_q_negatives=torch.zeros(2))
    # row 0 sees only negative 5, row 1 sees 3 and 5
    v = model.item_tower()
    row0 = F.cross_entropy(torch.stack([u[0] @ v[3], u[0] @ v[5]]).unsqueeze(0), torch.tensor([0]))
    row1 = F.cross_entropy(torch.stack([u[1] @ v[4], u[1] @ v[3], u[1] @ v[5]]).unsqueeze(0),
                           torch.tensor([0]))
    torch.testing.assert_close(with_hit, (row0 + row1) / 2)


def test_inbatch_loss_equals_the_per_example_softmax_over_the_other_targets():
    """In-batch negatives (Yi et al. 2019): example i's softmax runs over its own target and every other
    example's target whose item differs from its own (an accidental hit is dropped), each logit less
    log p of its item. Brute force, one example at a time; a duplicated target and unequal log p make
    both a flipped correction and a missing (or over-wide) hit mask change the value."""
    model = make_model()
    g = torch.Generator().manual_seed(3)
    u = torch.randn(6, 8, generator=g)
    target = torch.tensor([4, 9, 4, 17, 2, 9])  # 4 and 9 each twice: accidental hits
    log_p = torch.log(torch.tensor([0.30, 0.05, 0.30, 0.01, 0.20, 0.05]))  # log p of each target's item
    got = model.inbatch_loss(user_vec=u, target=target, log_q_target=log_p)
    v = model.item_tower()
    losses = []
    for i in range(len(target)):
        cols = [i] + [j for j in range(len(target)) if j != i and target[j] != target[i]]
        logits = torch.stack([u[i] @ v[target[j]] - log_p[j] for j in cols])
        losses.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(got, torch.stack(losses).mean())
    # no correction (zeros) is a different loss: the correction is really applied
    plain = model.inbatch_loss(user_vec=u, target=target, log_q_target=torch.zeros(6))
    assert abs(plain.item() - got.item()) > 1e-3


def test_padding_does_not_change_user_vector():
    model = make_model().eval()
    hist = torch.tensor([[0, 0, 4, 9, 2], [0, 0, 0, 0, 11]])
    cats = torch.tensor([[0, 1, 3, 3], [0, 0, 0, 2]])
    age = torch.tensor([0.2, 0.9])
    u = model.user_tower(**inputs(hist, cats, age))
    more_pad = torch.cat([torch.zeros(2, 6, dtype=torch.long), hist], dim=1)
    right_pad = torch.cat([hist, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    cats_pad = torch.cat([cats, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model.user_tower(**inputs(more_pad, cats_pad, age)), u)
    torch.testing.assert_close(model.user_tower(**inputs(right_pad, cats, age)), u)
    with torch.no_grad():  # even a non-zero padding row must not leak in
        model.history_embedding.weight[0].normal_()
        model.bag_embeddings["category"].weight[0].normal_()
    torch.testing.assert_close(model.user_tower(**inputs(more_pad, cats_pad, age)), u)
    with pytest.raises(ValueError, match="padding"):
        model.loss(user_vec=u, target=torch.tensor([0, 1]), negatives=torch.tensor([2]),
                   log_q_target=torch.zeros(2), log_q_negatives=torch.zeros(1))
    assert torch.count_nonzero(make_model().item_tower()[0]) == 0


def test_left_right_and_scattered_padding_give_the_same_user():
    """`pad_sequence` pads on the right; the history and the bags are averaged bags (no position is
    read), so the same ids padded on the left, on the right, mixed in one batch or with padding
    between them give the same user vectors, scores and losses: the model needs no re-alignment."""
    model = make_model().eval()
    rows, cat_rows = [[4, 9, 2, 17], [11], [3, 5, 8, 13, 21, 1]], [[1, 3, 3], [2], [6, 5]]

    def pad(rows, L, where):
        out = []
        for r in rows:
            z = [0] * (L - len(r))
            out.append({"left": z + r, "right": r + z, "both": z[:1] + r + z[1:]}[where])
        return torch.tensor(out)

    age = torch.tensor([0.2, 0.9, 0.5])
    left, right, both = (pad(rows, 7, where) for where in ("left", "right", "both"))
    u = model.user_tower(**inputs(left, pad(cat_rows, 4, "left"), age))
    scattered = left[:, torch.randperm(7, generator=torch.Generator().manual_seed(0))]
    mixed = torch.stack([left[0], right[1], both[2]])  # one row of each layout in a batch
    target = torch.tensor([5, 6, 7])
    for history, cats in [(right, pad(cat_rows, 4, "right")), (scattered, pad(cat_rows, 4, "both")),
                          (mixed, pad(cat_rows, 4, "right"))]:
        u2 = model.user_tower(**inputs(history, cats, age))
        torch.testing.assert_close(u2, u)
        torch.testing.assert_close(model(**inputs(history, cats, age)), u @ model.item_tower().T)
        torch.testing.assert_close(
            model.inbatch_loss(user_vec=u2, target=target, log_q_target=torch.zeros(3)),
            model.inbatch_loss(user_vec=u, target=target, log_q_target=torch.zeros(3)))


def test_example_age_is_used_and_zero_at_serving():
    model = make_model().eval()
    hist = torch.tensor([[0, 4, 9, 2]])
    cats = torch.tensor([[1, 3]])
    serving = model.user_tower(**inputs(hist, cats, None))
    torch.testing.assert_close(serving, model.user_tower(**inputs(hist, cats, torch.zeros(1))))
    old = model.user_tower(**inputs(hist, cats, torch.ones(1)))
    assert not torch.allclose(serving, old)


def test_inputs_are_checked():
    model = make_model()
    with pytest.raises(ValueError, match="bags"):
        model.user_tower(history=torch.ones(2, 3, dtype=torch.long), bags={},
                         user_features=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="n_items"):
        ytd.YoutubeDNN(config=ytd.YoutubeDNNConfig(n_items=0))


def test_overfits_tiny_batch():
    torch.manual_seed(0)
    model = make_model()
    hist = torch.randint(0, N_ITEMS + 1, (16, 6))
    cats = torch.randint(0, N_CATS, (16, 4))
    target = torch.randint(1, N_ITEMS + 1, (16,))
    age = torch.rand(16)
    corpus = torch.arange(1, N_ITEMS + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(80):
        u = model.user_tower(**inputs(hist, cats, age))
        loss = model.loss(user_vec=u, target=target, negatives=corpus,
                          log_q_target=torch.zeros(16), log_q_negatives=torch.zeros(N_ITEMS))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::40]
    scores = model(**inputs(hist, cats, age))  # (B, N+1)
    assert (scores[:, 1:].argmax(1) + 1 == target).float().mean() > 0.9


def test_mips_reduction_index_finds_the_inner_product_top_k():
    """Serving helper (Utils.mips): after the MIPS->L2 reduction, L2 order is inner-product order, and
    the HNSW index over the augmented vectors finds most of the exact top-k by u . v."""
    from Utils.mips import MipsHNSW
    from Utils.retrieval import recall_vs_exact, topk

    g = torch.Generator().manual_seed(7)
    items = torch.randn(2001, 16, generator=g) * torch.exp(0.3 * torch.randn(2001, 1, generator=g))
    users = torch.randn(100, 16, generator=g)
    exact_ids, exact_scores = topk(users, items, 20)
    index = MipsHNSW(items, threads=1, ef_search=512)
    ids, scores = index.search(users, 20)
    assert ids.min() >= 1  # 1-based item ids, padding row never returned
    assert recall_vs_exact(ids, exact_ids.numpy()) > 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # returned in inner-product order
    # the reduction itself is exact: brute-force L2 on the augmented vectors = exact inner-product top-k
    v = index.vectors
    aug = np.hstack([v, np.sqrt((v ** 2).sum(1).max() - (v ** 2).sum(1))[:, None]])
    q = np.hstack([users.numpy(), np.zeros((100, 1), dtype=np.float32)])
    l2 = ((q[:, None, :] - aug[None, :, :]) ** 2).sum(-1)  # (U, N)
    top_l2 = np.argsort(l2, axis=1)[:, :20] + 1
    assert recall_vs_exact(top_l2, exact_ids.numpy()) > 0.99


def test_bag_average_equals_the_masked_mean_of_the_non_padding_embeddings():
    """The fused embedding_bag mean must be exactly the average over non-padding ids (values and
    gradients), with a zero vector for an all-padding row (Figure 3's averaged bags)."""
    torch.manual_seed(0)
    table = torch.nn.Embedding(40, 6, padding_idx=0)
    ids = torch.randint(1, 40, (9, 11))
    ids[0] = 0  # all padding
    ids[1, :10] = 0  # one real id
    ids[2, ::2] = 0  # padding scattered, not only on the left
    mask = (ids != 0).unsqueeze(-1).float()
    ref = (table(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    out = ytd.masked_mean(table, ids)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.equal(out[0], torch.zeros(6))
    assert torch.allclose(out[1], table.weight[ids[1, 10]])
    (g_out,) = torch.autograd.grad(out.pow(2).sum(), table.weight)
    (g_ref,) = torch.autograd.grad(ref.pow(2).sum(), table.weight)
    assert torch.allclose(g_out, g_ref, atol=1e-6)


def test_log_q_correction_keeps_popularity_when_negatives_are_sampled_by_popularity():
    """Learn one logit per item (user vector fixed at 1, D = 1) from targets drawn from P, with
    negatives drawn from Q = P, as the demo's popularity-shaped Q does. With the log-Q correction the
    logits follow log P, the logits of the softmax of Eq. (1), in order and spread; without it they
    tend to log P - log Q, flat here: the popularity the model should learn is cancelled (the note's
    log-Q figure shows the same drift on the synthetic data)."""
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    logits = {}
    for corrected in (True, False):
        torch.manual_seed(0)
        model = ytd.YoutubeDNN(config=ytd.YoutubeDNNConfig(n_items=5, dim=1, hidden=()))
        opt = torch.optim.Adam([model.item_embedding.weight], lr=0.05)
        g = torch.Generator().manual_seed(3)
        log_expected = torch.log(20 * torch.cat([torch.ones(1), p]))  # 20 draws per batch
        for _ in range(150):
            target = torch.multinomial(p, 256, replacement=True, generator=g) + 1
            neg = torch.multinomial(p, 20, replacement=True, generator=g) + 1
            scale = 1.0 if corrected else 0.0
            loss = model.loss(user_vec=torch.ones(256, 1), target=target, negatives=neg,
                              log_q_target=scale * log_expected[target],
                              log_q_negatives=scale * log_expected[neg])
            opt.zero_grad()
            loss.backward()
            opt.step()
        logits[corrected] = model.item_tower()[1:, 0].detach()
    assert torch.equal(logits[True].argsort(descending=True), torch.arange(5))  # order of P
    assert logits[True].std() > 0.8 * torch.log(p).std()  # and most of its spread
    assert logits[False].std() < 0.5 * logits[True].std()  # popularity cancelled without it


# ---- the demo as a tool: save -> load round trip, vectors for faiss, ONNX user tower -------------


def test_out_of_range_ids_are_named_errors():
    """An id past the table is a ValueError naming the input and the range, not an IndexError or a
    silent read of another table's row; ids at the edges of the range are fine."""
    model = make_model().eval()
    ok = inputs(torch.tensor([[0, N_ITEMS]]), torch.tensor([[0, N_CATS - 1]]))
    model.user_tower(**ok)
    with pytest.raises(ValueError, match=rf"history .*id {N_ITEMS + 1} .*0\.\.{N_ITEMS}"):
        model.user_tower(**inputs(torch.tensor([[1, N_ITEMS + 1]]), torch.tensor([[1]])))
    with pytest.raises(ValueError, match=rf"bag 'category': id {N_CATS} .*0\.\.{N_CATS - 1}"):
        model.user_tower(**inputs(torch.tensor([[1, 2]]), torch.tensor([[N_CATS]])))


def test_demo_save_load_round_trip_gives_identical_metrics(tmp_path):
    from tests.conftest import result_of
    from tests.test_bad_input_recall import TINY, run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "ids_only")  # no side files: the history alone
    flags = ["--data", f"seqtxt:{data}", *TINY["YoutubeDNN"], "--epochs", "2", "--threads", "1"]
    ckpt, vectors = tmp_path / "ytd.pt", tmp_path / "ytd.npz"
    code, out, err, _ = run_demo("YoutubeDNN", [*flags, "--save", str(ckpt), "--export-vectors", str(vectors)])
    assert code == 0, err[-2000:]
    assert out.count("side inputs absent") == 1
    saved = result_of(out)
    code, out, err, _ = run_demo("YoutubeDNN", [*flags, "--load", str(ckpt), "--recommend", "7"])
    assert code == 0, err[-2000:]
    loaded = result_of(out)
    assert loaded["metrics"] == saved["metrics"] and loaded["valid_metrics"] == saved["valid_metrics"]
    assert "training skipped" in out and "user 7:" in out and "top-10 recommendations:" in out
    z = np.load(vectors)
    assert z["item_vectors"].shape == (len(z["item_ids"]), 8) and z["user_vectors"].shape == (121 - 1, 8)
    assert "999" not in set(z["user_ids"])  # dropped by the split: no history, no vector


@pytest.mark.slow  # torch.onnx's exporter takes ~10 s
def test_onnx_user_tower_equals_pytorch(tmp_path):
    """`--export-onnx`: the ONNX user tower (item bags looked up inside) equals the PyTorch tower within
    1e-5 under onnxruntime, for batch sizes and history lengths other than those it was traced with."""
    ort = pytest.importorskip("onnxruntime")
    from tests.test_bad_input_recall import TINY, run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "with_attributes", attributes=True)
    onnx_path = tmp_path / "user_tower.onnx"
    code, out, err, ns = run_demo("YoutubeDNN", ["--data", f"seqtxt:{data}", *TINY["YoutubeDNN"],
                                                 "--epochs", "1", "--threads", "1",
                                                 "--export-onnx", str(onnx_path)])
    assert code == 0, err[-2000:]
    assert ns["onnx_max_abs_diff"] <= 1e-5
    tower = ns["ServingUserTower"](ns["model"], ns["bag_tables_t"]).eval()
    assert tower.bag_names == ["attributes"]  # the bag path is exercised
    session = ort.InferenceSession(str(onnx_path))
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for B, L in [(1, 3), (5, 50), (33, 80)]:
        history = torch.randint(0, ns["N"] + 1, (B, L), generator=g)
        history[0, : L // 2] = 0  # left padding
        with torch.no_grad():
            expected = tower(history).numpy()
        got = session.run(None, {"history": history.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    print(f"ONNX vs PyTorch, max abs diff {worst:.2e}")
    # one movable file: no external-data file beside it, and a copy alone in an empty folder runs
    assert [f.name for f in tmp_path.iterdir() if "onnx" in f.name] == ["user_tower.onnx"]
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "tower.onnx").write_bytes(onnx_path.read_bytes())
    moved = ort.InferenceSession(str(tmp_path / "alone" / "tower.onnx"))
    assert np.array_equal(moved.run(None, {"history": history.numpy()})[0], got)
    assert worst <= 1e-5
