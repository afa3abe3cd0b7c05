"""SDM (Lv et al., CIKM 2019): the paper's properties, checked on tiny cases.

- the gate G of Eq. (21) lies in (0, 1) and fuses as o = (1 - G) * p + G * s (Eq. (22)):
  G = 1 leaves only the short-term vector (long-term inputs cannot matter), G = 0 only the
  long-term one;
- the session rule of §3.1 (same session while the gap is under 10 minutes, at most 50 actions)
  on hand-made timestamps, and the no-clock fallback;
- padding (id 0) changes nothing; the model overfits a tiny batch; the sampled softmax equals the
  full softmax when the sample is the whole corpus.
"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from Datasets.sessions import latest_session_mask, session_ids, split_latest_session
from tests.conftest import load_module

sdm = load_module("Classic Models/Recall/SDM/model.py", "sdm_model")

N_ITEMS, N_USERS = 40, 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second thread only adds contention on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(dropout: float = 0.0, lstm_layers: int = 1) -> "sdm.SDM":
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    category = torch.randint(1, 5, (N_ITEMS + 1, 1), generator=g)
    attributes = torch.randint(0, 9, (N_ITEMS + 1, 3), generator=g)  # multi-valued, 0 = none
    category[0] = 0
    attributes[0] = 0
    cfg = sdm.SDMConfig(
        n_items=N_ITEMS,
        profile_sizes={"user": N_USERS + 1},
        dim=16,
        num_heads=2,
        dropout=dropout,
        lstm_layers=lstm_layers,
    )
    return sdm.SDM(cfg, item_features={"category": category, "attribute": attributes}).eval()


def _batch(B: int = 5, S: int = 6, T: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    short = torch.randint(1, N_ITEMS + 1, (B, S), generator=g)
    long = torch.randint(1, N_ITEMS + 1, (B, T), generator=g)
    short[0, :3] = 0  # left padding of various lengths
    long[1, :5] = 0
    long[2, :] = 0  # a user with no long-term behaviour
    user = torch.randint(1, N_USERS + 1, (B,), generator=g)
    return {"user": user}, short, long


# ----------------------------------------------------------------------------- gate


def test_gate_is_eq21_of_profile_session_and_long_term_vectors():
    """Eq. (21): G = sigmoid(W1 e_u + W2 s + W3 p + b), written out with the weight matrices; each
    of the three inputs moves G (a gate that ignores one of them fails), and G lies in (0, 1)."""
    model = _model()
    profile, short, long = _batch(B=16, seed=3)
    with torch.no_grad():
        _, G = model(profile=profile, short=short, long=long, return_gate=True)
        e_u = model.user_profile(profile)
        s, p = model.short_term(short, e_u), model.long_term(long, e_u)
        W1, b = model.gate_user.weight, model.gate_user.bias
        W2, W3 = model.gate_short.weight, model.gate_long.weight
        expected = torch.sigmoid(e_u @ W1.T + s @ W2.T + p @ W3.T + b)  # (B, D)
        torch.testing.assert_close(G, expected)
        for moved in (model.gate(e_u.flip(0), s, p), model.gate(e_u, s.flip(0), p),
                      model.gate(e_u, s, p.flip(0))):
            assert (moved - G).abs().max() > 1e-4
    assert G.shape == (16, 16)
    assert (G > 0).all() and (G < 1).all()


def test_user_attention_follows_eq15_16():
    """Eqs. (15)-(16): s = sum_k softmax_k(x^_k . e_u) x^_k over the real actions. The profile is
    the query: two users with the same session get different s, and a profile pointing at one state
    makes s approach that state. A plain (masked) mean of the states fails all three checks."""
    model = _model()
    profile, short, _ = _batch(seed=5)
    with torch.no_grad():
        x_hat, mask = model.session_states(short)  # (B, S, D), (B, S)
        e_u = model.user_profile(profile)  # (B, D)
        scores = (x_hat * e_u[:, None]).sum(-1).masked_fill(~mask, float("-inf"))  # (B, S)
        expected = (torch.softmax(scores, dim=-1).unsqueeze(-1) * x_hat).sum(1)  # (B, D)
        torch.testing.assert_close(model.short_term(short, e_u), expected)
        assert (model.short_term(short, e_u.flip(0)) - expected).abs().max() > 1e-4
        # a query along one real state, scaled up: the softmax concentrates on the best match
        target = x_hat[torch.arange(5), mask.sum(1) - 1]  # (B, D): each row's last real state
        query = 1e3 * target / target.norm(dim=-1, keepdim=True)
        best = (x_hat @ query.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, float("-inf"))
        winner = x_hat[torch.arange(5), best.argmax(1)]  # (B, D)
        torch.testing.assert_close(model.short_term(short, query), winner, atol=1e-4, rtol=0)


def test_fusion_follows_eq22_gate_weights_short_term():
    """o = (1 - G) * p + G * s: the gate multiplies the SHORT-term vector s (paper Eq. (22))."""
    model = _model()
    profile, short, long = _batch()
    with torch.no_grad():
        o, G = model(profile=profile, short=short, long=long, return_gate=True)
        e_u = model.user_profile(profile)
        s = model.short_term(short, e_u)
        p = model.long_term(long, e_u)
        torch.testing.assert_close(G, model.gate(e_u, s, p))
        torch.testing.assert_close(o, (1 - G) * p + G * s)
        torch.testing.assert_close(
            model(profile=profile, short=short, long=long, force_gate=1.0), s
        )
        torch.testing.assert_close(
            model(profile=profile, short=short, long=long, force_gate=0.0), p
        )


def test_gate_one_ignores_long_term_and_gate_zero_ignores_short_term():
    model = _model()
    profile, short, long = _batch()
    _, other_short, other_long = _batch(seed=7)
    with torch.no_grad():

        def run(s, lg, gate=None):
            return model(profile=profile, short=s, long=lg, force_gate=gate)

        # G = 1: long-term inputs cannot move o ...
        torch.testing.assert_close(run(short, long, 1.0), run(short, other_long, 1.0))
        # ... G = 0: short-term inputs cannot move o.
        torch.testing.assert_close(run(short, long, 0.0), run(other_short, long, 0.0))
        # With the learned gate both matter (so the two checks above are not vacuous).
        assert not torch.allclose(run(short, long), run(short, other_long))
        assert not torch.allclose(run(short, long), run(other_short, long))


# ----------------------------------------------------------------------------- sessions


def test_session_rule_ten_minute_gap_and_fifty_actions():
    # user 1: gaps 300 s, 599 s (same session), 600 s (new), then 60 actions 1 s apart after a day
    t1 = [0, 300, 899, 1499] + [100_000 + i for i in range(60)]
    # user 2: starts a new session even with a 0 s gap from user 1's last action
    t2 = [100_059, 100_100]
    user = np.array([1] * len(t1) + [2] * len(t2))
    ts = np.array(t1 + t2)
    sid = session_ids(user, ts)
    assert list(sid[:4]) == [0, 0, 0, 1]  # 599 s keeps the session, 600 s breaks it
    assert (sid[4:54] == 2).all() and (sid[54:64] == 3).all()  # 60 actions -> 50 + 10
    assert list(sid[64:]) == [4, 4]  # a new user opens a new session


def test_latest_session_split_on_hand_made_timestamps():
    # left-padded histories (most recent last); times in seconds
    items = torch.tensor(
        [
            [0, 0, 11, 12, 13, 14],  # gaps 100, 700, 30: latest session = [13, 14]
            [0, 21, 22, 23, 24, 25],  # gaps 599 x4: one session = all five
            [31, 32, 33, 34, 35, 36],  # last gap 600 exactly: latest session = [36]
        ]
    )
    ts = torch.tensor(
        [
            [0, 0, 1000, 1100, 1800, 1830],
            [0, 0, 599, 1198, 1797, 2396],
            [0, 10, 20, 30, 40, 640],
        ]
    )
    short, long = split_latest_session(items, ts)
    assert short.tolist() == [[0, 0, 0, 0, 13, 14], [0, 21, 22, 23, 24, 25], [0, 0, 0, 0, 0, 36]]
    assert long.tolist() == [[0, 0, 0, 0, 11, 12], [0, 0, 0, 0, 0, 0], [0, 31, 32, 33, 34, 35]]
    # the 50-action cap: 60 actions 1 s apart -> the latest session is the last 10
    items60 = torch.arange(1, 61)[None]
    short60, long60 = split_latest_session(items60, torch.arange(60)[None])
    assert (short60[0, -10:] == torch.arange(51, 61)).all() and (short60[0, :-10] == 0).all()
    assert (long60[0, -50:] == torch.arange(1, 51)).all()
    # the paper's 7-day window on the long-term part
    _, long_w = split_latest_session(items, ts, long_window_seconds=615)
    assert long_w.tolist()[0] == [0] * 6  # 11 and 12 lie more than 615 s before 13
    assert long_w.tolist()[2] == [0, 0, 0, 0, 34, 35]  # 34 is 610 s before 36, 33 is 620 s


def test_no_clock_fallback_takes_the_last_n_actions():
    items = torch.tensor([[0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 8, 9]])
    short, long = split_latest_session(items, last_n=3)
    assert short.tolist() == [[3, 4, 5], [0, 8, 9]]
    assert long.tolist() == [[0, 0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0, 0]]


def test_vectorised_split_matches_a_plain_python_reference():
    rng = np.random.default_rng(0)
    B, L = 200, 30
    lengths = rng.integers(0, L + 1, B)
    gaps = rng.choice([1, 300, 599, 600, 5000], size=(B, L), p=[0.6, 0.1, 0.1, 0.1, 0.1])
    ts = np.cumsum(gaps, axis=1)
    items = rng.integers(1, 99, (B, L))
    for b in range(B):
        items[b, : L - lengths[b]] = 0
    mask = latest_session_mask(torch.tensor(items), torch.tensor(ts), max_session=7).numpy()
    for b in range(B):  # reference: walk the row, applying the two rules
        start, count = None, 0
        for j in range(L - lengths[b], L):
            if start is None or ts[b, j] - ts[b, j - 1] >= 600 or count == 7:
                start, count = j, 0
            count += 1
        expected = np.zeros(L, dtype=bool)
        if start is not None:
            expected[start:] = True
        assert (mask[b] == expected).all(), b


# ----------------------------------------------------------------------------- padding


def test_padding_changes_nothing():
    model = _model(lstm_layers=2)
    profile, short, long = _batch()
    with torch.no_grad():
        o = model(profile=profile, short=short, long=long)

        def pad(x, k):
            return torch.cat([torch.zeros(x.shape[0], k, dtype=x.dtype), x], 1)

        o_padded = model(profile=profile, short=pad(short, 4), long=pad(long, 9))
    torch.testing.assert_close(o, o_padded)
    # padding rows of every embedding are zero and the padding item is never recommended
    for emb in model.feature_embeddings.values():
        assert (emb.weight[0] == 0).all()
    assert torch.isinf(model.score(o)[:, 0]).all()
    with pytest.raises(ValueError, match="padding"):
        model.loss(o, torch.tensor([0, 1, 2, 3, 4]), torch.arange(1, N_ITEMS + 1))


def _left_and_right(rows: list[list[int]], L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows padded on the left ([0, 0, a, b]) and on the right ([a, b, 0, 0])."""
    left = torch.tensor([[0] * (L - len(r)) + r for r in rows])
    right = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    return left, right


def test_right_padding_reads_as_left_padding():
    """`pad_sequence` pads on the right; a copied model must not read the session from its last
    slots then. Right-padded sessions give the same user vectors, gates, scores, loss and session
    states as the same sessions padded on the left (a mixed batch too); the long-term behaviour is a
    bag, read in any layout; padding between a session's real actions is a clear error."""
    model = _model(lstm_layers=2)
    profile, _, long = _batch()  # B = 5, T = 8: rows with left padding, one with none at all
    left, right = _left_and_right([[5, 8, 2, 9], [3, 1], [7, 4, 6, 11, 12, 13], [14], [20, 21]], 6)
    long_right = torch.stack([torch.cat([r[r != 0], r[r == 0]]) for r in long])  # (B, T)
    scattered = long[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    target, negatives = torch.tensor([3, 7, 1, 40, 22]), torch.arange(1, N_ITEMS + 1)
    with torch.no_grad():
        o_l, G_l = model(profile=profile, short=left, long=long, return_gate=True)
        o_r, G_r = model(profile=profile, short=right, long=long_right, return_gate=True)
        torch.testing.assert_close(o_r, o_l)
        torch.testing.assert_close(G_r, G_l)
        torch.testing.assert_close(model.score(o_r), model.score(o_l))
        torch.testing.assert_close(model.loss(o_r, target, negatives),
                                   model.loss(o_l, target, negatives))
        # session states come back right-aligned (with their mask) whatever the input's layout
        (x_l, m_l), (x_r, m_r) = model.session_states(left), model.session_states(right)
        torch.testing.assert_close(x_r, x_l)
        assert torch.equal(m_r, m_l) and m_l.sum(1).tolist() == [4, 2, 6, 1, 2]
        mixed = torch.where(torch.arange(5)[:, None] % 2 == 0, left, right)  # 1, 3: right-padded
        torch.testing.assert_close(model(profile=profile, short=mixed, long=scattered), o_l)
        # the long-term bag: padding anywhere and any order give the same p^u
        e_u = model.user_profile(profile)
        torch.testing.assert_close(model.long_term(scattered, e_u), model.long_term(long, e_u))
    assert sdm.left_align(left)[2] is None  # left padding: the tensors pass untouched
    gap = left.clone()
    gap[1] = torch.tensor([0, 3, 0, 1, 0, 0])
    with pytest.raises(ValueError, match=r"short row 1 has padding \(0\) between real items"):
        model(profile=profile, short=gap, long=long)


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # LSTM weights, export
def test_right_padding_path_exports():
    """`left_align` takes no data-dependent branch under torch.export: the exported user tower
    always moves every row (left-padded rows by 0) and gives the eager vectors for either layout."""
    model = _model()
    profile, _, long = _batch(B=3)
    left, right = _left_and_right([[5, 8, 2, 9], [3, 1], [7, 4, 6, 11, 12, 13]], 6)
    mixed = torch.stack([left[0], right[1], right[2]])

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sdm = model

        def forward(self, user, short, long):
            return self.sdm(profile={"user": user}, short=short, long=long)

    with torch.no_grad():
        eager = Tower()(profile["user"], left, long)
        exported = torch.export.export(Tower(), (profile["user"], right, long)).module()
        for short in (left, right, mixed):
            torch.testing.assert_close(exported(profile["user"], short, long), eager)


def test_count_pooling_equals_one_row_per_element():
    """Eqs. (17)-(18) from value counts (small vocabularies) equal the per-element attention."""
    model = _model()
    profile, short, long = _batch(seed=11)
    long[3, -4:] = long[3, -1]  # repeated items and repeated categories
    with torch.no_grad():
        fast = model(profile=profile, short=short, long=long)
        model.config.count_pooling_max_vocab = 0  # force one row per element everywhere
        slow = model(profile=profile, short=short, long=long)
    torch.testing.assert_close(fast, slow)


def test_empty_long_term_gives_zero_pooling_not_nan():
    model = _model()
    profile, short, _ = _batch()
    with torch.no_grad():
        e_u = model.user_profile(profile)
        p = model.long_term(torch.zeros(5, 8, dtype=torch.long), e_u)
    torch.testing.assert_close(p, torch.tanh(model.long_proj.bias).expand(5, -1))


def test_bad_inputs_fail_early():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        sdm.SDMConfig(n_items=5, profile_sizes={"user": 3}, dim=10, num_heads=4)
    with pytest.raises(ValueError, match="profile_sizes"):
        sdm.SDMConfig(n_items=5)
    model = _model()
    profile, short, long = _batch()
    with pytest.raises(ValueError, match="short"):
        model(profile=profile, short=short.float(), long=long)
    with pytest.raises(ValueError, match="misses"):
        model(profile={}, short=short, long=long)


# ----------------------------------------------------------------------------- objective


def test_sampled_softmax_with_whole_corpus_equals_full_softmax():
    model = _model()
    profile, short, long = _batch()
    target = torch.tensor([3, 7, 1, 40, 22])
    with torch.no_grad():
        o = model(profile=profile, short=short, long=long)
        sampled = model.loss(o, target, torch.arange(1, N_ITEMS + 1))
        full = F.cross_entropy(model.score(o)[:, 1:], target - 1)
        # a constant log Q (uniform sampler) shifts every logit equally: no change
        uniform = model.loss(
            o,
            target,
            torch.arange(1, N_ITEMS + 1),
            negative_log_q=torch.full((N_ITEMS,), -3.0),
            target_log_q=torch.full((5,), -3.0),
        )
    torch.testing.assert_close(sampled, full)
    torch.testing.assert_close(uniform, full)


def test_overfits_a_tiny_batch():
    model = _model().train()
    profile, short, long = _batch(B=8, seed=5)
    target = torch.randint(1, N_ITEMS + 1, (8,), generator=torch.Generator().manual_seed(9))
    negatives = torch.arange(1, N_ITEMS + 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(80):
        loss = model.loss(model(profile=profile, short=short, long=long), target, negatives)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    model.eval()
    with torch.no_grad():
        top1 = model.score(model(profile=profile, short=short, long=long)).argmax(1)
    assert (top1 == target).all()


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_beauty_fallback_split_keeps_every_action_once_in_order():
    """No clock on Beauty: last 5 actions = session; session + long-term = the history, in order."""
    from Datasets import leave_one_out, load
    from tests.conftest import shared_path

    split = leave_one_out(load(f"seqtxt:{shared_path('amazon-beauty', 'Beauty.txt')}"))
    hist, _ = split.history("test", 50)
    hist = torch.from_numpy(hist)
    short, long = split_latest_session(hist, last_n=5)
    assert ((short != 0).sum(1) == (hist != 0).sum(1).clamp(max=5)).all()
    joined = torch.cat([long, short], dim=1)
    packed = torch.stack([torch.cat([r[r != 0], r[r == 0]]) for r in joined[:500]])
    expect = torch.stack([torch.cat([r[r != 0], r[r == 0]]) for r in hist[:500]])
    assert torch.equal(packed[:, : hist.shape[1]], expect)


# ----------------------------------------------------------------------------- the demo as a tool


def test_out_of_range_ids_are_named_errors():
    """Item and profile ids past their tables are ValueErrors naming the input and the range."""
    model = _model()
    profile, short, long = _batch()
    with torch.no_grad():
        model(profile=profile, short=short.clamp(max=N_ITEMS), long=long)  # the edge id N is fine
    bad = short.clone()
    bad[1, -1] = N_ITEMS + 1
    with pytest.raises(ValueError, match=rf"short .*id {N_ITEMS + 1} .*0\.\.{N_ITEMS}"):
        model(profile=profile, short=bad, long=long)
    with pytest.raises(ValueError, match=rf"profile\['user'\]: id {N_USERS + 1} .*0\.\.{N_USERS}"):
        model(profile={"user": torch.full((5,), N_USERS + 1)}, short=short, long=long)


def test_demo_save_load_round_trip_gives_identical_metrics(tmp_path):
    from tests.conftest import result_of
    from tests.test_bad_input_recall import TINY, run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "ids_only")  # no side files, no clock: the item id alone
    flags = ["--data", f"seqtxt:{data}", *TINY["SDM"], "--epochs", "2", "--threads", "1"]
    ckpt, vectors = tmp_path / "sdm.pt", tmp_path / "sdm.npz"
    code, out, err, _ = run_demo("SDM", [*flags, "--save", str(ckpt), "--export-vectors", str(vectors)])
    assert code == 0, err[-2000:]
    assert out.count("side inputs absent") == 1
    saved = result_of(out)
    code, out, err, _ = run_demo("SDM", [*flags, "--load", str(ckpt), "--recommend", "7"])
    assert code == 0, err[-2000:]
    loaded = result_of(out)
    assert loaded["metrics"] == saved["metrics"] and loaded["valid_metrics"] == saved["valid_metrics"]
    assert loaded["mean_gate"] == saved["mean_gate"]
    assert "training skipped" in out and "user 7\n" in out and "top-10 recommendations" in out
    z = np.load(vectors)
    assert z["item_vectors"].shape == (len(z["item_ids"]), 8) and z["user_vectors"].shape == (120, 8)
