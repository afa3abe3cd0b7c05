"""One convention in every copied model file: `save` / `load` that need nothing but the file, and a
serving call that runs in eval mode without touching the caller's train/eval modes: `recommend`
(recall: scores and items, padding and seen items left out) or `predict` (ranking: probabilities).

Each model file is copied ALONE into an empty folder and imported from there as `model`, as a user
would. One subprocess runs every model (one `import torch` instead of 20), each from its own folder
with the repository nowhere on its path; the parametrised tests read its per-model verdicts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# What each model needs: its stage, its kind of serving call, and a tiny model with inputs. The code
# runs with `m` = the copied module and `torch`; it defines `model`, `run(mdl)` (outputs compared
# after save -> load) and, per kind:
#   recall:  first (history, or SDM's short), inputs (the other keywords), seen (B, L') ids a user
#            has seen, n_items, score_at(items) (the model's own scores at (B, k) items, eval mode),
#            exhaustive (default True: every item is scored, not found by a beam)
#   ranking: args, kwargs (forward's inputs), want() (what predict must equal, eval mode)
# and optionally extra(model, loaded, folder) for model-specific checks.
# ------------------------------------------------------------------------------------------------

SPECS: dict[str, tuple[str, str, str]] = {
    "HSTU": ("Recall", "recall", """
        model = m.HSTU(m.HSTUConfig(n_items=30, max_len=6, dim=8, n_blocks=1, n_heads=2, qk_dim=4,
                                    v_dim=4, n_negatives=4))
        first = torch.tensor([[0, 0, 3, 5, 5, 7], [1, 2, 3, 4, 6, 8], [9, 10, 0, 0, 0, 0]])
        inputs = {"timestamps": torch.tensor([[0, 0, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6],
                                              [5, 9, 0, 0, 0, 0]])}
        seen, n_items = first, 30
        run = lambda mdl: mdl.score(first, **inputs)
        score_at = lambda items: model.score(first, **inputs).gather(1, items)
    """),
    "SASRec": ("Recall", "recall", """
        model = m.SASRec(m.SASRecConfig(n_items=30, max_len=6, dim=8, n_blocks=1))
        first = torch.tensor([[0, 0, 3, 5, 5, 7], [1, 2, 3, 4, 6, 8], [9, 10, 0, 0, 0, 0]])
        inputs, seen, n_items = {}, first, 30
        run = lambda mdl: mdl.score(first)
        score_at = lambda items: model.score(first).gather(1, items)
    """),
    "GRU4Rec": ("Recall", "recall", """
        model = m.GRU4Rec(m.GRU4RecConfig(n_items=30, dim=8, n_sample=4, dropout_hidden=0.2))
        model.set_item_counts(torch.arange(31).float())
        first = torch.tensor([[0, 0, 3, 5, 5, 7], [1, 2, 3, 4, 6, 8], [9, 10, 0, 0, 0, 0]])
        inputs, seen, n_items = {}, first, 30
        run = lambda mdl: mdl.score(first)
        score_at = lambda items: model.score(first).gather(1, items)
        def extra(model, loaded, folder):
            assert torch.equal(loaded.item_counts, model.item_counts)  # sampling counts travel along
    """),
    "BERT4Rec": ("Recall", "recall", """
        model = m.BERT4Rec(m.BERT4RecConfig(n_items=30, max_len=6, dim=8, n_blocks=1))
        first = torch.tensor([[0, 0, 3, 5, 5, 7], [1, 2, 3, 4, 6, 8], [9, 10, 0, 0, 0, 0]])
        inputs, seen, n_items = {}, first, 30
        run = lambda mdl: mdl.score(first)
        score_at = lambda items: model.score(first).gather(1, items)
        def extra(model, loaded, folder):
            history, targets = loaded.mask_items(first, generator=torch.Generator().manual_seed(0))
            assert bool((history == 31).any()) and float(loaded.loss(history, targets)) > 0
    """),
    "YoutubeDNN": ("Recall", "recall", """
        cfg = m.YoutubeDNNConfig(n_items=30, dim=8, hidden=(16,), bag_sizes={"cat": 5},
                                 user_feature_sizes=(4,), dropout=0.2, final_relu=False)
        model = m.YoutubeDNN(config=cfg)
        first = torch.tensor([[0, 3, 5, 5], [1, 2, 3, 4], [9, 0, 10, 0]])
        inputs = {"bags": {"cat": torch.tensor([[1, 2, 0], [3, 4, 1], [0, 0, 2]])},
                  "user_features": torch.tensor([[1], [2], [3]])}
        seen, n_items = first, 30
        run = lambda mdl: mdl(history=first, **inputs)
        score_at = lambda items: model(history=first, **inputs).gather(1, items)
    """),
    "MIND": ("Recall", "recall", """
        side = torch.randint(1, 4, (31, 2))
        side[0] = 0
        cfg = m.MINDConfig(n_items=30, dim=8, side_vocab_size=4, user_feature_sizes=(3,), max_len=6,
                           n_interests=2, hidden=(16,), final_relu=False)
        model = m.MIND(config=cfg, item_side_ids=side)
        first = torch.tensor([[0, 0, 3, 5, 5, 7], [1, 2, 3, 4, 6, 8], [9, 10, 0, 0, 0, 0]])
        inputs = {"user_features": torch.tensor([[0], [1], [2]])}
        seen, n_items = first, 30
        run = lambda mdl: mdl.score_items(*mdl.user_tower(history=first, **inputs),
                                          mdl.item_tower())
        score_at = lambda items: run(model).gather(1, items)
        def extra(model, loaded, folder):
            assert torch.equal(loaded.item_side_ids, side)  # a non-persistent buffer, kept by save
    """),
    "SDM": ("Recall", "recall", """
        cat = torch.randint(1, 4, (31,))
        cat[0] = 0
        cfg = m.SDMConfig(n_items=30, profile_sizes={"user": 5}, dim=8, num_heads=2, dropout=0.2)
        model = m.SDM(cfg, item_features={"cat": cat})
        first = torch.tensor([[0, 3, 5], [1, 2, 3], [9, 0, 0]])  # short
        long = torch.tensor([[4, 0, 6, 7], [8, 11, 12, 0], [0, 0, 0, 0]])
        inputs = {"profile": {"user": torch.tensor([1, 2, 3])}, "long": long}
        seen, n_items = torch.cat([first, long], dim=1), 30
        run = lambda mdl: mdl.score(mdl(short=first, **inputs))
        score_at = lambda items: run(model).gather(1, items)
        def extra(model, loaded, folder):
            assert torch.equal(loaded.table_cat.squeeze(-1), cat)  # non-persistent, kept by save
    """),
    "TIGER": ("Recall", "recall", """
        cfg = m.TIGERConfig(code_sizes=(4, 4, 2), n_user_buckets=10, max_history=4, d_model=16,
                            n_heads=2, d_head=8, d_ff=32, n_encoder_layers=1, n_decoder_layers=1)
        model = m.TIGER(cfg)
        every = torch.cartesian_prod(torch.arange(4), torch.arange(4), torch.arange(2))  # (32, 3)
        model.set_catalogue(every[torch.randperm(32)[:12]])  # 12 items
        first = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 0, 0, 0]])
        inputs = {"user": torch.tensor([7, 8, 9])}
        seen, n_items = first, 12
        exhaustive = False  # a beam search: a wider beam (exclude_seen) may find better items
        run = lambda mdl: mdl.score_items(user=inputs["user"], history=first,
                                          items=torch.arange(1, 13).expand(3, 12))
        score_at = lambda items: model.score_items(user=inputs["user"], history=first, items=items)
        def extra(model, loaded, folder):
            assert torch.equal(loaded.catalogue, model.catalogue)
            assert torch.equal(loaded.generate(user=inputs["user"], history=first, beam=4)[0],
                               model.generate(user=inputs["user"], history=first, beam=4)[0])
    """),
    "WideDeep": ("Ranking", "ranking", """
        cfg = m.WideDeepConfig(field_dims=(10, 20, 5), dense_dim=2, hidden=(16,),
                               cross_fields=((0, 1), (1, 2)), dropout=0.3, batch_norm=True)
        model = m.WideDeep(cfg)
        args, kwargs = (torch.randint(0, 5, (6, 3)), torch.rand(6, 2)), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
        def extra(model, loaded, folder):
            assert loaded.config == model.config  # nested tuples of cross_fields back as tuples
    """),
    "DeepFM": ("Ranking", "ranking", """
        model = m.DeepFM(m.DeepFMConfig(field_dims=(10, 20, 5), dense_dim=1, hidden=(16,),
                                        batch_norm=True))
        args, kwargs = (torch.randint(0, 5, (6, 3)),), {"dense": torch.rand(6, 1)}
        run = lambda mdl: mdl(*args, **kwargs)
        want = lambda: torch.sigmoid(model(*args, **kwargs))
    """),
    "DCNv2": ("Ranking", "ranking", """
        cfg = m.DCNv2Config(field_dims=(10, 20, 5), dense_dim=2, dim=4, hidden=(16,),
                            cross_rank=2, num_experts=2, expert_activation="tanh", dropout=0.2)
        model = m.DCNv2(cfg)
        args, kwargs = (torch.randint(0, 5, (6, 3)), torch.rand(6, 2)), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
    """),
    "AutoInt": ("Ranking", "ranking", """
        model = m.AutoInt(m.AutoIntConfig(field_dims=(10, 20, 5), dense_dim=1, dim=8,
                                          attention_dim=4, dnn_hidden=(16,), dropout=0.2))
        args, kwargs = (torch.randint(0, 5, (6, 3)), torch.rand(6, 1)), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
    """),
    "FinalMLP": ("Ranking", "ranking", """
        cfg = m.FinalMLPConfig(field_dims=(10, 20, 5), dense_dim=1, dim=4, hidden1=(8,),
                               hidden2=(4,), gate_hidden=(8,), gate1_fields=(0,),
                               gate2_fields=(1,), num_heads=2, dropout=0.2, batch_norm=True)
        model = m.FinalMLP(cfg)
        args, kwargs = (torch.randint(0, 5, (6, 3)), torch.rand(6, 1)), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
        def extra(model, loaded, folder):
            assert loaded.config == model.config  # tuples of fields and widths back as tuples
            assert all(torch.equal(a, b) for a, b in zip(loaded.gate_weights(*args),
                                                         model.eval().gate_weights(*args)))
    """),
    "DIN": ("Ranking", "ranking", """
        freq = [torch.rand(31) + 1, torch.rand(6) + 1]
        model = m.DIN(item_vocab_sizes=(31, 6), context_vocab_sizes=(4,), dim=4,
                      attention_hidden=(8,), mlp_hidden=(8,), id_frequencies=freq)
        history = torch.randint(1, 6, (5, 4, 2))
        history[:, :2] = 0  # padding
        args = (torch.randint(1, 6, (5, 2)), history, torch.randint(0, 4, (5, 1)))
        kwargs = {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
        def extra(model, loaded, folder):
            assert all(torch.equal(a, b) for a, b in zip(loaded.config.id_frequencies, freq))
    """),
    "DIEN": ("Ranking", "ranking", """
        model = m.DIEN(item_vocab_sizes=(31, 6), dim=4, mlp_hidden=(8,))
        history = torch.randint(1, 6, (5, 4, 2))
        history[:, :2] = 0  # left padding
        args, kwargs = (torch.randint(1, 6, (5, 2)), history), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
    """),
    "MMoE": ("Ranking", "ranking", """
        model = m.MMoE(task_types=("binary", "regression"), sparse_vocab_sizes=(5, 7), dense_dim=3,
                       n_experts=2, expert_hidden=(8,), tower_hidden=(4,), task_weights=(1.0, 0.5))
        args, kwargs = (), {"sparse": torch.randint(0, 5, (6, 2)), "dense": torch.randn(6, 3)}
        run = lambda mdl: mdl(**kwargs)
        want = lambda: torch.stack([torch.sigmoid(model(**kwargs)[:, 0]), model(**kwargs)[:, 1]], 1)
        def extra(model, loaded, folder):
            outputs = model(**kwargs)  # the older form maps outputs and keeps their graph
            assert model.predict(outputs).requires_grad
            assert torch.equal(model.predict(outputs), model.predict(outputs=outputs))
            probs, gates = model.predict(**kwargs, return_gates=True)
            assert probs.shape == (6, 2) and gates.shape == (6, 2, 2)
            bottom = m.SharedBottom(task_types=("binary",), dense_dim=3, bottom_hidden=(4,))
            bottom.save(f"{folder}/bottom.pt")
            x = torch.randn(4, 3)
            assert torch.equal(m.SharedBottom.load(f"{folder}/bottom.pt")(dense=x),
                               bottom.eval()(dense=x))
            expect_value_error(lambda: m.MMoE.load(f"{folder}/bottom.pt"), "SharedBottom")
    """),
    "PLE": ("Ranking", "ranking", """
        model = m.PLE(task_types=("binary", "binary"), sparse_vocab_sizes=(50, 20), dim=4,
                      n_levels=2, expert_hidden=(8,), tower_hidden=(4,),
                      weight_decay_rates=(0.9, 0.8))
        args, kwargs = (torch.randint(0, 20, (6, 2)),), {}
        run = lambda mdl: mdl(*args)
        want = lambda: torch.sigmoid(model(*args))
    """),
    "ESMM": ("Ranking", "ranking", """
        cfg = m.ESMMConfig(sparse_vocab_sizes=(5, 7), dim=4, tower_hidden=(8,), method="escm2-dr",
                           share_embeddings=False)
        model = m.ESMM(cfg)
        args, kwargs = (torch.randint(0, 5, (6, 2)),), {}
        run = lambda mdl: mdl(*args)
        want = lambda: m.ESMM.probabilities(model(*args))
        def extra(model, loaded, folder):
            p = loaded.predict(*args)
            assert torch.equal(p[:, 2], p[:, 0] * p[:, 1])  # pCTCVR = pCTR x pCVR, Eq. (1)
            assert loaded.config == model.config and loaded.config.method == "escm2-dr"
    """),
    "DPP": ("Re-ranking", "rerank", """
        model = m.DPPReranker(theta=0.6, max_length=4, window_size=3, dtype=torch.float32)
        scores, vectors = torch.rand(2, 8), torch.randn(2, 8, 4)
        run = lambda mdl: mdl(scores=scores, item_vectors=vectors)
        def extra(model, loaded, folder):
            assert loaded.config == model.config and loaded.config.dtype is torch.float32
    """),
    "MMR": ("Re-ranking", "rerank", """
        model = m.MMRReranker(lam=0.4, max_length=4)
        scores, vectors = torch.rand(2, 8), torch.randn(2, 8, 4)
        run = lambda mdl: mdl(scores=scores, item_vectors=vectors)
        def extra(model, loaded, folder):
            assert loaded.config == model.config
    """),
    "Calibration": ("Re-ranking", "rerank", """
        model = m.CalibratedReranker(lam=0.6, max_length=4, half_life=2.0)
        scores = torch.rand(2, 8)
        items = m.category_distribution(torch.randint(1, 5, (2, 8, 2)), n_categories=4)
        history = m.category_distribution(torch.randint(0, 5, (2, 6, 2)), n_categories=4)
        history[:, -1] = items[:, 0]  # every history holds an item with a category
        run = lambda mdl: mdl(scores=scores, item_categories=items, history_categories=history)
        def extra(model, loaded, folder):
            assert loaded.config == model.config and loaded.config.half_life == 2.0
    """),
    "Constrained": ("Re-ranking", "rerank", """
        model = m.ConstrainedReranker(algorithm="det_cons", max_length=4, strict=False)
        scores = torch.rand(2, 8)
        groups = torch.randint(0, 3, (2, 8))
        shares = torch.tensor([0.5, 0.3, 0.2])
        run = lambda mdl: mdl(scores=scores, groups=groups, proportions=shares)
        def extra(model, loaded, folder):
            assert loaded.config == model.config and loaded.config.algorithm == "det_cons"
    """),
    "PRM": ("Re-ranking", "rerank", """
        model = m.PRM(feature_dim=6, pv_dim=3, max_len=8, d_model=8, n_heads=2, n_blocks=1,
                      ffn_dim=16)
        x, pv = torch.randn(2, 8, 6), torch.randn(2, 8, 3)
        mask = torch.ones(2, 8, dtype=torch.bool)
        mask[1, 6:] = False
        run = lambda mdl: mdl(features=x, pv=pv, mask=mask)
    """),
}

# The checks, run in the subprocess for every model; `job` holds the model's name, kind, folder,
# its setup code and the checkpoint of another model (a real foreign file).
RUNNER = r'''
import datetime, json, os, sys, traceback
jobs = json.loads(sys.stdin.read())


def expect_value_error(call, *words):
    try:
        call()
    except ValueError as e:
        assert all(w in str(e) for w in words), (words, str(e))
        return
    raise AssertionError(f"no ValueError (expected one naming {words})")


def plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool, torch.Tensor))


def same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def modes(mdl):
    return [sub.training for sub in mdl.modules()]


def check(job, ns):
    model, run, folder, cls = ns["model"], ns["run"], job["folder"], type(ns["model"])
    path = os.path.join(folder, "m.pt")
    with torch.no_grad():
        before = run(model.eval())
    model.save(path)
    loaded = cls.load(path)
    assert type(loaded) is cls and not any(modes(loaded)), "load must return the model in eval mode"
    with torch.no_grad():
        assert same(run(loaded), before), "save -> load changed the outputs"
    ckpt = torch.load(path, weights_only=True)
    assert {"model", "config", "state_dict"} <= set(ckpt), list(ckpt)
    assert ckpt["model"] == cls.__name__ and plain(ckpt["config"]), ckpt["config"]
    # an existing file is kept unless overwrite=True, and no temporary file is left behind
    written = open(path, "rb").read()
    try:
        model.save(path)
    except FileExistsError as e:
        assert path in str(e) and "overwrite=True" in str(e), str(e)
    else:
        raise AssertionError("save replaced an existing file without overwrite=True")
    assert open(path, "rb").read() == written
    model.save(path, overwrite=True)  # replaced on request
    cls.load(path)
    assert sorted(f for f in os.listdir(folder) if not f.startswith("__")) == ["m.pt", "model.py"]
    # files save did not write
    bad = os.path.join(folder, "bad.pt")
    for wrong, words in [
        ({"model": "SomeOtherModel", "config": {"n_items": 3}, "state_dict": {}, "init": {}},
         ["SomeOtherModel", cls.__name__]),
        ({"model": cls.__name__, "config": {"not_a_field": 1}, "state_dict": {}, "init": {}},
         ["not_a_field", "expected"]),
        ({"state_dict": {}}, ["keys"]),
        ([1, 2, 3], ["list"]),
        ({**ckpt, "when": datetime.date(2020, 1, 1)}, [cls.__name__]),  # more than plain types
        ({**ckpt, "state_dict": {**ckpt["state_dict"], "extra": torch.zeros(1)}}, ["weights"]),
    ]:
        torch.save(wrong, bad)
        expect_value_error(lambda: cls.load(bad), *words)
    with open(bad, "w") as f:
        f.write("not a checkpoint")
    expect_value_error(lambda: cls.load(bad), cls.__name__)
    if job["foreign"]:
        expect_value_error(lambda: cls.load(job["foreign"]), cls.__name__)
    os.remove(bad)

    model.train()
    if job["kind"] != "rerank":
        for sub in list(model.modules())[1:2]:
            sub.eval()  # a mixed state, as a caller with a frozen part has: kept as it is
    flags = modes(model)
    if job["kind"] == "recall":
        first, inputs, seen, k = ns["first"], ns["inputs"], ns["seen"], 3
        scores, items = model.recommend(first, k, **inputs)
        assert modes(model) == flags, "recommend changed the train/eval modes"
        assert scores.shape == items.shape == (len(first), k) and items.dtype == torch.int64
        assert scores.is_floating_point() and not scores.requires_grad
        assert all(len(set(row)) == k for row in items.tolist()), "items repeat in a row"
        assert bool((items > 0).all()) and bool((items <= ns["n_items"]).all())
        assert not bool((items[:, :, None] == seen[:, None, :]).any()), "a seen item came back"
        assert bool((scores[:, :-1] >= scores[:, 1:]).all()), "not best first"
        model.eval()
        with torch.no_grad():
            own = ns["score_at"](items)
        assert torch.allclose(scores, own, atol=1e-5), (scores, own)
        scores_all, items_all = model.recommend(first, k, exclude_seen=False, **inputs)
        with torch.no_grad():
            assert torch.allclose(scores_all, ns["score_at"](items_all), atol=1e-5)
        if ns.get("exhaustive", True):  # every item scored: leaving items out cannot do better
            assert bool((scores_all[:, 0] >= scores[:, 0] - 1e-5).all())
        expect_value_error(lambda: model.recommend(first, ns["n_items"], **inputs), "k")
        expect_value_error(lambda: model.recommend(first, 0, **inputs), "k")
    elif job["kind"] == "ranking":
        probs = model.predict(*ns["args"], **ns["kwargs"])
        assert modes(model) == flags, "predict changed the train/eval modes"
        assert not probs.requires_grad
        model.eval()
        with torch.no_grad():
            want = ns["want"]()
        assert torch.allclose(probs, want, atol=1e-6), (probs, want)
    if "extra" in ns:
        ns["extra"](model, loaded, folder)


results, foreign = {}, None
for job in jobs:
    os.chdir(job["folder"])
    sys.path.insert(0, job["folder"])
    sys.modules.pop("model", None)
    try:
        import torch
        torch.manual_seed(0)
        import model as m
        assert os.path.dirname(os.path.abspath(m.__file__)) == job["folder"]
        ns = {"m": m, "torch": torch, "expect_value_error": expect_value_error}
        exec(job["setup"], ns)
        job["foreign"] = foreign
        check(job, ns)
        results[job["name"]] = "ok"
        foreign = os.path.join(job["folder"], "m.pt")  # a real checkpoint of another model
    except BaseException:
        results[job["name"]] = traceback.format_exc(limit=6)
    sys.path.remove(job["folder"])
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, str]:
    jobs = []
    for name, (stage, kind, setup) in SPECS.items():
        folder = tmp_path_factory.mktemp(f"copy_{name}")
        shutil.copy(ROOT / "Classic Models" / stage / name / "model.py", folder / "model.py")
        jobs.append({"name": name, "kind": kind, "folder": str(folder),
                     "setup": textwrap.dedent(setup)})
    cwd = tmp_path_factory.mktemp("runner")  # nothing of the repository on the path
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(jobs), cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(SPECS))
def test_copied_model_file_saves_loads_and_serves(verdicts, name):
    assert verdicts[name] == "ok", f"{name}:\n{verdicts[name]}"


def test_every_model_file_is_covered():
    files = sorted(p.parent.name for p in (ROOT / "Classic Models").glob("*/*/model.py"))
    assert files == sorted(SPECS)


def test_usage_blocks_show_save_load_and_the_serving_call():
    for name, (stage, kind, _) in SPECS.items():
        if name == "SASRec":
            continue
        text = (ROOT / "Classic Models" / stage / name / "model.py").read_text()
        usage = text.split("Usage::", 1)[1].split("\n\n", 2)[1]
        assert '.save("m.pt")' in usage and '.load("m.pt")' in usage, name
        call = {"recall": ".recommend(", "ranking": ".predict("}.get(kind, "")
        assert call in usage, (name, call)


# ------------------------------------------------------------------------------------------------
# Construction: every model is built as `Model(config)` from its config dataclass; the models that
# also take keyword overrides apply them to a copy, never to the caller's config.
# ------------------------------------------------------------------------------------------------

MAIN_CLASSES = {  # folder -> (main classes, config class)
    "Recall/SASRec": (("SASRec",), "SASRecConfig"),
    "Recall/HSTU": (("HSTU",), "HSTUConfig"),
    "Recall/GRU4Rec": (("GRU4Rec",), "GRU4RecConfig"),
    "Recall/BERT4Rec": (("BERT4Rec",), "BERT4RecConfig"),
    "Recall/MIND": (("MIND",), "MINDConfig"),
    "Recall/SDM": (("SDM",), "SDMConfig"),
    "Recall/YoutubeDNN": (("YoutubeDNN",), "YoutubeDNNConfig"),
    "Recall/TIGER": (("TIGER",), "TIGERConfig"),
    "Ranking/WideDeep": (("WideDeep",), "WideDeepConfig"),
    "Ranking/DeepFM": (("DeepFM",), "DeepFMConfig"),
    "Ranking/DCNv2": (("DCNv2",), "DCNv2Config"),
    "Ranking/AutoInt": (("AutoInt",), "AutoIntConfig"),
    "Ranking/FinalMLP": (("FinalMLP",), "FinalMLPConfig"),
    "Ranking/DIN": (("DIN",), "DINConfig"),
    "Ranking/DIEN": (("DIEN",), "DIENConfig"),
    "Ranking/MMoE": (("MMoE", "SharedBottom"), "MultiTaskConfig"),
    "Ranking/PLE": (("PLE",), "PLEConfig"),
    "Ranking/ESMM": (("ESMM",), "ESMMConfig"),
    "Re-ranking/MMR": (("MMRReranker",), "MMRConfig"),
    "Re-ranking/DPP": (("DPPReranker",), "DPPConfig"),
    "Re-ranking/PRM": (("PRM",), "PRMConfig"),
    "Re-ranking/Calibration": (("CalibratedReranker",), "CalibrationConfig"),
    "Re-ranking/Constrained": (("ConstrainedReranker",), "ConstrainedConfig"),
}


def test_every_model_folder_is_listed():
    folders = {f"{p.parent.parent.name}/{p.parent.name}" for p in (ROOT / "Classic Models").glob("*/*/model.py")}
    assert folders == set(MAIN_CLASSES)


@pytest.mark.parametrize("folder", sorted(MAIN_CLASSES))
def test_model_is_built_from_its_config_dataclass(folder):
    import dataclasses
    import inspect

    from tests.conftest import load_module

    mod = load_module(f"Classic Models/{folder}/model.py")
    classes, config_name = MAIN_CLASSES[folder]
    assert dataclasses.is_dataclass(getattr(mod, config_name))
    for name in classes:
        params = list(inspect.signature(getattr(mod, name).__init__).parameters.values())[1:]
        first = params[0]
        assert first.name == "config", f"{name}.__init__ takes {first.name!r} first, expected 'config'"
        assert first.kind == first.POSITIONAL_OR_KEYWORD
        assert config_name in str(first.annotation)


OVERRIDES = {  # folder -> (config keywords, one override)
    "Ranking/DIN": ({"item_vocab_sizes": (10, 4)}, {"dim": 8}),
    "Ranking/DIEN": ({"item_vocab_sizes": (10, 4)}, {"dim": 8}),
    "Ranking/MMoE": ({"sparse_vocab_sizes": (5, 6), "task_types": ("binary", "binary")}, {"dim": 4}),
    "Ranking/PLE": ({"sparse_vocab_sizes": (5, 6), "task_types": ("binary", "binary")}, {"dim": 4}),
    "Ranking/ESMM": ({"sparse_vocab_sizes": (5, 6)}, {"dim": 4}),
    "Ranking/FinalMLP": ({"field_dims": (5, 6)}, {"dim": 4}),
    "Re-ranking/MMR": ({}, {"lam": 0.3}),
    "Re-ranking/DPP": ({}, {"theta": 0.3}),
    "Re-ranking/PRM": ({"feature_dim": 4}, {"d_model": 8}),
    "Re-ranking/Calibration": ({}, {"lam": 0.3}),
    "Re-ranking/Constrained": ({}, {"algorithm": "det_relaxed"}),
}


@pytest.mark.parametrize("folder", sorted(OVERRIDES))
def test_keyword_overrides_never_touch_the_callers_config(folder):
    import dataclasses

    from tests.conftest import load_module

    mod = load_module(f"Classic Models/{folder}/model.py")
    classes, config_name = MAIN_CLASSES[folder]
    kwargs, override = OVERRIDES[folder]
    for name in classes:
        cfg = getattr(mod, config_name)(**kwargs)
        before = dataclasses.asdict(cfg)
        model = getattr(mod, name)(cfg, **override)
        assert dataclasses.asdict(cfg) == before  # the caller's config is unchanged
        key, value = next(iter(override.items()))
        assert getattr(model.config, key) == value and getattr(cfg, key) != value
        # Model(config) alone equals Model(**keywords) of the same fields
        assert getattr(mod, name)(cfg).config == getattr(mod, name)(**kwargs).config


# ------------------------------------------------------------------------------------------------
# The same name for the same thing: a config's embedding width is `dim` in every model.
# ------------------------------------------------------------------------------------------------

OTHER_EMBEDDING_NAMES = ("embed_dim", "embedding_dim", "emb_dim")
NO_DIM = {  # folder -> why its config has no field `dim`
    "Recall/TIGER": "a T5-style encoder-decoder: the token embeddings are d_model wide, the "
                    "Transformer's own name, beside d_head and d_ff",
    "Re-ranking/PRM": "a Transformer over ranked lists of given feature vectors: d_model is the "
                      "encoder width, not an id embedding's",
    "Re-ranking/MMR": "no embeddings: it re-ranks given scores and item vectors",
    "Re-ranking/DPP": "no embeddings: it re-ranks given scores and item vectors",
    "Re-ranking/Calibration": "no embeddings: it re-ranks given scores and category distributions",
    "Re-ranking/Constrained": "no embeddings: it re-ranks given scores and group ids",
}


@pytest.mark.parametrize("folder", sorted(MAIN_CLASSES))
def test_the_embedding_width_is_called_dim(folder):
    import dataclasses

    from tests.conftest import load_module

    mod = load_module(f"Classic Models/{folder}/model.py")
    fields = [f.name for f in dataclasses.fields(getattr(mod, MAIN_CLASSES[folder][1]))]
    assert not set(fields) & set(OTHER_EMBEDDING_NAMES), (folder, fields)
    if folder in NO_DIM:
        assert "dim" not in fields, f"{folder} has `dim` now: take it off NO_DIM"
    else:
        assert "dim" in fields, (folder, fields)


def test_no_dim_lists_only_model_folders():
    assert set(NO_DIM) <= set(MAIN_CLASSES)


@pytest.mark.parametrize("folder", ["Recall/SASRec", "Recall/HSTU", "Recall/GRU4Rec", "Recall/BERT4Rec"])
def test_sequence_models_loss_takes_history_and_targets_then_keywords(folder):
    """One order across the sequence-recall family: loss(history, targets, *, ...). What differs
    between the files (negatives and log-Q in SASRec, timestamps in HSTU, the carried hidden state and
    session resets in GRU4Rec, the reduction in BERT4Rec, whose targets are the items behind its [MASK]
    tokens) is keyword-only, so a third positional argument cannot mean negatives in
    one file and timestamps in the other."""
    import inspect

    from tests.conftest import load_module

    mod = load_module(f"Classic Models/{folder}/model.py")
    cls = getattr(mod, MAIN_CLASSES[folder][0][0])
    params = list(inspect.signature(cls.loss).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["history", "targets"]
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params[:2])
    assert all(p.kind == p.KEYWORD_ONLY for p in params[2:]) and len(params) > 2


# ------------------------------------------------------------------------------------------------
# Vocabulary sizes, counted one way: `n_items` counts the real items (ids 1..n_items, 0 = padding, a
# table of n_items + 1 rows); every other id vocabulary (`field_dims`, `*_vocab_size(s)`, `*_sizes`)
# counts every id *including* 0 (ids 0..size-1, a table of exactly `size` rows). The sizes below are
# distinct primes, so an off-by-one in either direction shows as a row count no rule allows.
# ------------------------------------------------------------------------------------------------

VOCAB_CASES = {  # folder -> (code building `model`, the embedding row counts the rule gives)
    "Recall/SASRec": ("m.SASRec(m.SASRecConfig(n_items=37, max_len=6, dim=8, n_blocks=1))",
                      [6, 38]),  # max_len positions, 37 + 1 items
    "Recall/HSTU": ("m.HSTU(m.HSTUConfig(n_items=37, max_len=6, dim=8, n_blocks=1, n_heads=2, "
                    "qk_dim=4, v_dim=4))", [6, 38]),
    "Recall/GRU4Rec": ("m.GRU4Rec(m.GRU4RecConfig(n_items=37, dim=8, embedding='onehot'))",
                       [38, 38]),  # the one-hot input matrix and W_y, 37 + 1 rows each
    "Recall/BERT4Rec": ("m.BERT4Rec(m.BERT4RecConfig(n_items=37, max_len=6, dim=8, n_blocks=1))",
                        [6, 38]),  # max_len positions, 37 + 1 items ([MASK] has its own vector)
    "Recall/YoutubeDNN": ("m.YoutubeDNN(m.YoutubeDNNConfig(n_items=37, dim=8, hidden=(16,), "
                          "bag_sizes={'cat': 11}, user_feature_sizes=(13,)))", [11, 13, 38, 38]),
    "Recall/MIND": ("m.MIND(m.MINDConfig(n_items=37, dim=8, side_vocab_size=17, user_feature_sizes=(13,), "
                    "max_len=6, n_interests=2, hidden=(16,)), "
                    "item_side_ids=torch.randint(1, 17, (38, 2)))", [13, 17, 38]),
    "Recall/SDM": ("m.SDM(m.SDMConfig(n_items=37, profile_sizes={'user': 13}, dim=8, num_heads=2), "
                   "item_features={'cat': torch.randint(1, 11, (38,))})", [11, 13, 38, 38]),
    "Ranking/DeepFM": ("m.DeepFM(m.DeepFMConfig(field_dims=(11, 13, 17), dense_dim=1))", [41, 41]),
    "Ranking/WideDeep": ("m.WideDeep(m.WideDeepConfig(field_dims=(11, 13, 17), dense_dim=1))",
                         [1, 41, 41]),  # 1: the wide part's cross-product table with no crosses
    "Ranking/DCNv2": ("m.DCNv2(m.DCNv2Config(field_dims=(11, 13, 17), dense_dim=1))", [41]),
    "Ranking/AutoInt": ("m.AutoInt(m.AutoIntConfig(field_dims=(11, 13, 17), dense_dim=1))", [41]),
    "Ranking/FinalMLP": ("m.FinalMLP(m.FinalMLPConfig(field_dims=(11, 13, 17), dense_dim=1, "
                         "gate1_fields=(0,), gate2_fields=(1, 2)))",
                         [11, 30, 41]),  # gate 1's table (user), gate 2's (13 + 17), the main one
    "Ranking/DIN": ("m.DIN(m.DINConfig(item_vocab_sizes=(11, 13), context_vocab_sizes=(17,)))",
                    [11, 13, 17]),
    "Ranking/DIEN": ("m.DIEN(m.DIENConfig(item_vocab_sizes=(11, 13), context_vocab_sizes=(17,)))",
                     [11, 13, 17]),
    "Ranking/MMoE": ("m.MMoE(m.MultiTaskConfig(sparse_vocab_sizes=(11, 13), "
                     "task_types=('binary', 'binary')))", [11, 13]),
    "Ranking/PLE": ("m.PLE(m.PLEConfig(sparse_vocab_sizes=(11, 13), task_types=('binary', 'binary')))",
                    [11, 13]),
    "Ranking/ESMM": ("m.ESMM(m.ESMMConfig(sparse_vocab_sizes=(11, 13)))", [11, 13]),
}
NO_ID_VOCABULARY = {  # folder -> why VOCAB_CASES has no row for it
    "Recall/TIGER": "its tokens are codebook entries (code_sizes) and hashed user buckets, no padded ids",
    "Re-ranking/PRM": "it reads given feature vectors, not ids",
    "Re-ranking/MMR": "no embeddings",
    "Re-ranking/DPP": "no embeddings",
    "Re-ranking/Calibration": "category ids enter only through category_distribution(ids, n_categories), "
                              "a helper: the re-ranker reads distributions, it has no id table",
    "Re-ranking/Constrained": "group ids select a target share, they index no table",
}


def test_every_model_has_a_vocabulary_case():
    assert set(VOCAB_CASES) | set(NO_ID_VOCABULARY) == set(MAIN_CLASSES)
    assert not set(VOCAB_CASES) & set(NO_ID_VOCABULARY)


@pytest.mark.parametrize("folder", sorted(VOCAB_CASES))
def test_vocabulary_sizes_are_counted_one_way(folder):
    import dataclasses

    import torch

    from tests.conftest import load_module

    mod = load_module(f"Classic Models/{folder}/model.py")
    code, want = VOCAB_CASES[folder]
    model = eval(code, {"m": mod, "torch": torch})
    rows = sorted(e.num_embeddings for e in model.modules() if isinstance(e, torch.nn.Embedding))
    assert rows == want, f"{folder}: embedding tables of {rows} rows, the rule gives {want}"
    # the names say which count a field is: n_items, or a size that includes id 0
    for f in dataclasses.fields(getattr(mod, MAIN_CLASSES[folder][1])):
        if "vocab" in f.name or f.name.endswith(("_sizes", "_dims")) or f.name.endswith("_ids"):
            assert not f.name.startswith("n_"), f"{folder}.{f.name}: an n_ name counts real ids only"
