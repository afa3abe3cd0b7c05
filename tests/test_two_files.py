"""Two copied model files in one project: SASRec retrieves, DPP re-ranks, as a user would wire them.

Every model file is called `model.py`, so a project that uses two of them copies each under its own
name and imports it normally; loading one with importlib needs the module registered in
`sys.modules` before it runs (its `@dataclass` looks the module up), which the docstrings say."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SASREC = ROOT / "Classic Models" / "Recall" / "SASRec" / "model.py"
DPP = ROOT / "Classic Models" / "Re-ranking" / "DPP" / "model.py"

SCRIPT = textwrap.dedent('''
    import importlib.util
    import sys

    import torch

    import sasrec_model  # Classic Models/Recall/SASRec/model.py, copied under its own name
    import dpp_model  # Classic Models/Re-ranking/DPP/model.py

    torch.manual_seed(0)
    sas = sasrec_model.SASRec(sasrec_model.SASRecConfig(n_items=200, max_len=8, dim=16, loss="ce"))
    history = torch.tensor([[0, 0, 5, 9, 14], [3, 4, 7, 1, 2]])  # (B, L)
    scores = sas.eval().score(history)  # (B, N + 1)
    top = scores.topk(30, dim=1)  # the 30 best candidates of each user
    vectors = sas.item_embeddings().detach()[top.indices]  # (B, 30, D)
    relevance = torch.sigmoid(top.values.detach())  # (B, 30) on [0, 1]
    picked = dpp_model.DPPReranker(theta=0.7, max_length=10)(scores=relevance, item_vectors=vectors)
    items = top.indices.gather(1, picked)  # (B, 10) item ids of the final lists
    assert picked.shape == (2, 10) and (picked >= 0).all()
    assert all(len(set(row.tolist())) == 10 for row in items)  # ten distinct items per list
    print("OK", items[0].tolist())

    # the importlib route: register the module before executing it, or @dataclass fails
    spec = importlib.util.spec_from_file_location("dpp_again", "dpp_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dpp_again"] = module
    spec.loader.exec_module(module)
    assert module.DPPReranker(theta=0.7, max_length=10)(scores=relevance, item_vectors=vectors).equal(picked)
''')


def test_sasrec_and_dpp_copied_into_one_project_chain(tmp_path):
    shutil.copy(SASREC, tmp_path / "sasrec_model.py")
    shutil.copy(DPP, tmp_path / "dpp_model.py")
    (tmp_path / "main.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("OK")


def test_both_docstrings_say_how_to_use_two_model_files_together():
    for path in (SASREC, DPP):
        text = path.read_text()
        assert "sys.modules" in text and "own name" in text, path
