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


def test_rqvae_loss_terms_and_straight_through():
    torch.manual_seed(0)
    x, _ = _clustered(n_per=16)
    model = rq.RQVAE(rq.RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8,
                                    codebook_size=4, beta=0.25))
    out = model(x)  # first call initialises by k-means
    r, e = out["residuals"], out["words"]
    expected = ((e - r) ** 2).sum((1, 2)).mean() * (1 + 0.25)  # codebook + β commitment, Eq. (5)
    assert torch.allclose(out["rqvae"], expected, rtol=1e-5)
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
    with pytest.raises(ValueError, match="left-padded"):
        model.encoder_tokens(user, torch.tensor([[4, 0, 0, 0, 0, 5]]))


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
    from Datasets.item_text import item_documents, tfidf_embeddings

    path = shared_path("amazon-beauty", "Beauty.txt")
    data = Datasets.load(f"seqtxt:{path}")
    docs = item_documents(data)
    assert any(t.startswith("kw:") for t in docs[1]) and any(t.startswith("attr:") for t in docs[1])
    x, info = tfidf_embeddings(data, dim=32)
    assert x.shape == (data.n_items + 1, 32) and info["items_without_text"] <= 1
    assert abs(float((x[1:] ** 2).sum(1).mean()) - 1) < 1e-3 and (x[0] == 0).all()


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
