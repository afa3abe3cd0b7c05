"""Utils.loops.seqrec: the length-bucketed batches the SASRec/HSTU demos train on."""

import torch

import Datasets
from Utils.loops.seqrec import length_bucketed_batches, random_batches


def test_length_bucketed_batches_cover_every_row_once_and_cut_only_padding():
    g = torch.Generator().manual_seed(0)
    n_users, width = 37, 9
    lengths = torch.randint(0, width + 1, (n_users,), generator=g)
    seqs = torch.zeros(n_users, width, dtype=torch.long)
    for u, n in enumerate(lengths.tolist()):  # left-padded rows with n real items
        if n:
            seqs[u, -n:] = torch.randint(1, 50, (n,), generator=g)
    seqs[:, -1] += 1000 * torch.arange(n_users) + 1000  # tag each row so it can be found again
    ds = Datasets.TensorDictDataset({"seq": seqs})
    seen, spans = [], []
    for batch in length_bucketed_batches(ds, (seqs != 0).sum(1), batch_size=8,
                                          gen=torch.Generator().manual_seed(1)):
        b = batch["seq"]
        real = (b != 0).sum(1)
        assert b.shape[1] == max(2, int(real.max()))  # cut to the longest row, never below 2
        rows = (b[:, -1] // 1000 - 1).tolist()
        for r, row in zip(rows, b):
            assert torch.equal(row[row != 0], seqs[r][seqs[r] != 0])  # no real item was cut
        seen += rows
        spans.append((int(real.min()), int(real.max())))
    assert sorted(seen) == list(range(n_users))  # every row exactly once per epoch
    spans.sort()
    # bucketing: batches hold consecutive lengths, so no two batches' length ranges interleave
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_random_batches_cover_every_row_once_at_full_width_and_mix_lengths():
    n_users, width = 64, 9
    lengths = torch.arange(n_users) % (width + 1)
    seqs = torch.zeros(n_users, width, dtype=torch.long)
    for u, n in enumerate(lengths.tolist()):
        if n:
            seqs[u, -n:] = 1 + u
    ds = Datasets.TensorDictDataset({"seq": seqs, "row": torch.arange(n_users)})
    seen, spans = [], []
    for batch in random_batches(ds, batch_size=16, gen=torch.Generator().manual_seed(0)):
        assert batch["seq"].shape[1] == width  # nothing cut
        assert torch.equal(batch["seq"], seqs[batch["row"]])
        seen += batch["row"].tolist()
        real = (batch["seq"] != 0).sum(1)
        spans.append(int(real.max()) - int(real.min()))
    assert sorted(seen) == list(range(n_users))
    assert max(spans) >= width - 1  # unlike length buckets, a batch mixes short and long histories


# --------------------------------------------------------------------------------------------------
# The refit protocol: retrain on train + validation for the epoch count chosen on validation
# --------------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.conftest import result_of, run_demo_in_process  # noqa: E402


def test_refit_split_trains_on_every_interaction_but_the_test_item():
    split = Datasets.leave_one_out(Datasets.load("synthetic"))
    refit = split.refit_split()
    o, r = split.train_offsets, refit.train_offsets
    assert np.array_equal(np.diff(r), np.diff(o) + 1)  # one more item per user
    assert np.array_equal(refit.train_items[r[1:] - 1], split.valid_items)  # ... the validation item, last
    for u in (0, 7, 123):
        assert np.array_equal(refit.train_items[r[u]:r[u + 1] - 1], split.train_items[o[u]:o[u + 1]])
    # the test is unchanged: same targets, same histories, same items excluded as seen
    assert np.array_equal(refit.targets("test"), split.targets("test"))
    assert np.array_equal(refit.history("test", 20)[0], split.history("test", 20)[0])
    for a, b in zip(refit.seen("test"), split.seen("test")):
        assert np.array_equal(a, b)
    # nothing can be selected on validation any more
    with pytest.raises(ValueError, match="no validation stage"):
        refit.history("valid", 20)
    with pytest.raises(ValueError, match="no validation stage"):
        refit.targets("valid")
    with pytest.raises(ValueError, match="already"):
        refit.refit_split()


def test_sasrec_refit_retrains_for_the_best_epoch_of_the_run_it_names(tmp_path):
    first = tmp_path / "train_only.json"
    flags = ["--threads", "1", "--epochs", "3", "--dim", "16", "--blocks", "1", "--heads", "1"]
    code, out, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--out", str(first)])
    assert code == 0, err
    base = result_of(out)
    assert base["protocol_name"] == "train-only" and 1 <= base["best_epoch"] <= 3
    code, out, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--refit-from", str(first), "--epochs", "50"])
    assert code == 0, err
    refit = result_of(out)
    assert refit["protocol_name"] == "refit" and "refit on train + validation" in refit["protocol"]
    assert refit["epochs"] == base["best_epoch"]  # --epochs is replaced by the chosen count
    assert len(refit["curve"]) == base["best_epoch"] and "NDCG@10" not in refit["curve"][0]  # no validation
    assert refit["valid_metrics"] == base["valid_metrics"]  # the selection is the first run's
    assert refit["refit_from"]["train_only_metrics"] == base["metrics"]
    assert refit["metrics"] != base["metrics"]  # another model: trained on one more item per user
    # a refit must keep the flags that define the model; it says which differ
    code, _, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags[:-2] + ["--heads", "2", "--refit-from", str(first)])
    assert code == 2 and "--heads 1 there, 2 here" in err
    bad = tmp_path / "not_json.json"
    bad.write_text("{")
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--refit-from", str(bad)])
    assert code == 2 and "cannot read a RESULT json" in err
    code, _, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--refit-from", str(tmp_path / "refit_of_refit.json")])
    assert code == 2


# --------------------------------------------------------------------------------------------------
# --checkpoint / --resume: an interrupted run goes on from its last epoch and ends as one run would
# --------------------------------------------------------------------------------------------------

def test_a_resumed_sasrec_run_ends_as_the_uninterrupted_run(tmp_path):
    # sampled negatives and dropout draw from the global RNG, the batch order from the demo's generator:
    # the state file must carry both, the optimiser moments, the history and the clocks
    flags = ["--threads", "1", "--dim", "16", "--blocks", "1", "--heads", "1", "--loss", "sampled_ce",
             "--negatives", "32", "--target-ndcg", "0.05"]
    code, out, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--epochs", "4"])
    assert code == 0, err
    whole = result_of(out)
    state = tmp_path / "run.state.pt"
    code, out, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--epochs", "2", "--checkpoint", str(state)])  # "interrupted" at 2
    assert code == 0 and state.is_file(), err
    code, out, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--epochs", "4", "--checkpoint", str(state), "--resume"])
    assert code == 0, err
    assert "going on from epoch 3" in out
    resumed = result_of(out)
    assert [e["loss"] for e in resumed["curve"]] == [e["loss"] for e in whole["curve"]]
    assert [e["NDCG@10"] for e in resumed["curve"]] == [e["NDCG@10"] for e in whole["curve"]]
    assert resumed["metrics"] == whole["metrics"] and resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["time_to_target_epoch"] == whole["time_to_target_epoch"]
    assert resumed["resumed_after_epochs"] == [2] and "resumed_after_epochs" not in whole
    # a refit of a run that kept its state keeps its own (the ledger runs both with --checkpoint)
    first = tmp_path / "train_only.json"
    code, out, err, _ = run_demo_in_process("Recall", "SASRec", flags + [
        "--epochs", "2", "--checkpoint", str(tmp_path / "a.state.pt"), "--out", str(first)])
    assert code == 0, err
    code, out, err, _ = run_demo_in_process("Recall", "SASRec", flags + [
        "--refit-from", str(first), "--checkpoint", str(tmp_path / "a_refit.state.pt")])
    assert code == 0, err
    assert result_of(out)["protocol_name"] == "refit" and (tmp_path / "a_refit.state.pt").is_file()
    # the clocks go on: every epoch's wall time is later than the one before, across the resume
    walls = [e["wall_seconds"] for e in resumed["curve"]]
    assert walls == sorted(walls) and resumed["wall_seconds"] >= walls[-1]


def test_checkpoint_and_resume_refuse_what_cannot_work(tmp_path):
    flags = ["--threads", "1", "--dim", "16", "--blocks", "1", "--heads", "1", "--epochs", "1"]
    state = tmp_path / "run.state.pt"
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--checkpoint", str(state), "--resume"])
    assert code == 2 and "--resume needs an existing --checkpoint file" in err
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--checkpoint", str(state)])
    assert code == 0, err
    before = state.read_bytes()
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--checkpoint", str(state)])
    assert code == 2 and "exists" in err and "--resume" in err  # never overwritten without asking
    assert state.read_bytes() == before
    code, _, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags[:-4] + ["--heads", "2", "--epochs", "1", "--checkpoint", str(state), "--resume"])
    assert code == 2 and "--heads 1 there, 2 here" in err
    code, _, err, _ = run_demo_in_process(
        "Recall", "HSTU", flags + ["--checkpoint", str(state), "--resume"])
    assert code == 2 and "the state of a SASRec run" in err
    saved = tmp_path / "model.pt"
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", flags + ["--save", str(saved)])
    assert code == 0, err
    copy_of_saved = tmp_path / "saved_as_state.pt"
    copy_of_saved.write_bytes(saved.read_bytes())
    code, _, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--checkpoint", str(copy_of_saved), "--resume"])
    assert code == 2 and "not a training state" in err
    code, _, err, _ = run_demo_in_process(
        "Recall", "SASRec", flags + ["--load", str(saved), "--checkpoint", str(tmp_path / "x.pt")])
    assert code == 2 and "--checkpoint keeps the state of a training run" in err
