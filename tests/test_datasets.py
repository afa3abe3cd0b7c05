"""Loaders, the split and bad input. Real-data tests skip with a reason when ../shared/data is absent."""

import gzip
import json

import numpy as np
import pytest

import Datasets
from Datasets import DataError, leave_one_out, load
from tests.conftest import shared_path

# ---- real shared files ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_beauty_counts():
    p = shared_path("amazon-beauty", "Beauty.txt")
    d = load(f"seqtxt:{p}")
    assert (d.n_users, d.n_items, len(d.interactions)) == (22_363, 12_101, 198_502)
    attrs = np.unique(np.concatenate(d.items["attributes"].tolist()))
    assert len(attrs) == 637
    assert not d.has_timestamps
    # the file's own ids are kept: item 1 of the file is item 1 here, user 1's sequence starts 1 2 3 4 5
    first = d.interactions[d.interactions.user == 1]["item"].tolist()
    assert first == [1, 2, 3, 4, 5]
    assert d.items.loc[1, "asin"] == "B004756YJA"
    assert len(d.items.loc[1, "keywords"]) == 7


@pytest.mark.realdata
def test_movielens_1m_format():
    d = load(f"movielens:{shared_path('movielens-1m-format')}")
    assert d.n_users == 6_040 and d.n_items == 3_883
    # the sample holds 20,000 rating lines; `wc -l` says 19,999 because the last line has no newline
    assert len(d.interactions) == 20_000
    assert d.report.skipped == 0
    assert set(d.users.columns) >= {"gender", "age", "occupation"}
    assert d.users.loc[1, "gender"] == "F" and d.users.loc[1, "age"] == 1
    toy = d.items[d.items.title == "Toy Story (1995)"].iloc[0]
    assert toy["categories"] == ["Animation", "Children's", "Comedy"]


@pytest.mark.realdata
def test_frappe():
    d = load(f"libfm:{shared_path('frappe')}")
    assert len(d.parts["validation"]) == 57_722 and len(d.parts["test"]) == 28_860
    assert len(d.field_names) == 10 and d.sparse.shape == (86_582, 10)
    assert set(np.unique(d.labels)) == {0.0, 1.0}
    assert d.sparse.min() >= 1 and all(d.sparse[:, k].max() < d.field_dims[k] for k in range(10))
    assert abs(d.labels.mean() - 1 / 3) < 0.01  # 1 positive : 2 negatives
    assert d.report.skipped == 0  # every token is `id:1`, every line has 10 fields (CRLF endings)


# ---- Amazon 2018 loader on files written here -------------------------------------------------------


def _write(path, lines, gz):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _review(u, i, t, r=5.0):
    return json.dumps({"overall": r, "verified": True, "reviewerID": u, "asin": i, "unixReviewTime": t,
                       "reviewText": "ok"})


@pytest.fixture(params=[True, False], ids=["gzip", "plain"])
def amazon_files(tmp_path, request):
    gz = request.param
    reviews = [
        _review("A", "x1", 100), _review("A", "x2", 200), _review("A", "x3", 300),
        _review("B", "x2", 150), _review("B", "x3", 160), _review("B", "x1", 170),
        "{not json",                                            # malformed (line 7)
        _review("A", "x2", 200),                                # exact duplicate (line 8)
        json.dumps({"overall": 4.0, "asin": "x1", "unixReviewTime": 5}),  # missing reviewerID
        _review("C", "x1", 10),
    ]
    meta = [
        json.dumps({"asin": "x1", "title": "Red Lipstick", "brand": "Luma",
                    "category": ["Beauty", "Makeup", "Lips"], "price": "$12.99"}),
        json.dumps({"asin": "x2", "title": "Shampoo", "category": ["Beauty", "Hair Care"], "price": ""}),
        "{'asin': 'x3', 'title': 'Old style', 'price': 3.5}",   # 2014 python-literal line
    ]
    suffix = ".json.gz" if gz else ".json"
    rp, mp = tmp_path / f"Beauty_5{suffix}", tmp_path / f"meta_Beauty{suffix}"
    _write(rp, reviews, gz)
    _write(mp, meta, gz)
    return rp, mp


def test_amazon_counts_and_skips(amazon_files):
    rp, _ = amazon_files
    d = load(f"amazon2018:{rp}")  # the meta file beside it is found by name
    r = d.report
    assert (r.lines, r.kept, r.malformed, r.duplicates, r.missing_fields) == (10, 7, 1, 1, 1)
    assert "line 7" in " ".join(r.examples)
    assert d.n_users == 3 and d.n_items == 3 and len(d.interactions) == 7
    x1 = int(np.nonzero(d.item_raw == "x1")[0][0])
    assert d.items.loc[x1, "title"] == "Red Lipstick" and d.items.loc[x1, "category"] == "Makeup"
    assert d.items.loc[x1, "price"] == pytest.approx(12.99)
    x2 = int(np.nonzero(d.item_raw == "x2")[0][0])
    assert np.isnan(d.items.loc[x2, "price"]) and d.items.loc[x2, "brand"] == ""
    # sorted by time within each user
    a = d.interactions[d.interactions.user == int(np.nonzero(d.user_raw == "A")[0][0])]
    assert a["timestamp"].is_monotonic_increasing


def test_amazon_strict_raises_with_line_number(amazon_files):
    rp, _ = amazon_files
    with pytest.raises(DataError, match="line 7"):
        load(f"amazon2018:{rp}", strict=True)


# ---- the split ----------------------------------------------------------------------------------------


def test_leave_one_out_properties():
    d = load("synthetic")
    s = leave_one_out(d)
    df = d.interactions
    last = df.groupby("user").tail(1).set_index("user")
    assert np.array_equal(s.test_items, last.loc[s.users, "item"].to_numpy())
    # validation precedes test in time for every user, and the train part precedes validation
    assert np.all(s.valid_timestamps <= s.test_timestamps)
    tr_last = s.train_timestamps[s.train_offsets[1:] - 1]
    assert np.all(tr_last <= s.valid_timestamps)
    # no test item appears in the training history fed for validation (items are not repeated here)
    hist, _ = s.history("valid", 200)
    assert not np.any(hist == s.test_items[:, None])
    # the test history ends with the validation item
    th, _ = s.history("test", 200)
    assert np.array_equal(th[:, -1], s.valid_items)


def test_short_users_are_dropped_and_counted(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("1 1 2 3 4\n2 1 2\n3 5\n4 2 3 4\n")
    s = leave_one_out(load(f"seqtxt:{p}"))
    assert s.n_users == 2 and s.n_dropped_users == 2
    assert list(s.test_items) == [4, 4] and list(s.valid_items) == [3, 3]


def test_next_item_examples_use_only_earlier_items_and_cap():
    p_items = np.array([5, 6, 7, 8, 9])
    from Datasets.BaseDatasets import LOOSplit
    s = LOOSplit("t", 10, np.array([1]), np.array([0, 5]), p_items, np.arange(5), np.array([1]),
                 np.array([6]), np.array([2]), np.array([7]))
    ex = s.next_item_examples(max_len=3)
    assert ex["target"].tolist() == [6, 7, 8, 9]
    assert ex["history"].tolist() == [[0, 0, 5], [0, 5, 6], [5, 6, 7], [6, 7, 8]]
    capped = s.next_item_examples(max_len=3, max_per_user=2, seed=1)
    assert len(capped["target"]) == 2
    for h, t in zip(capped["history"].tolist(), capped["target"].tolist(), strict=True):
        assert h[-1] == t - 1  # history is exactly the items before the target


# ---- synthetic default ---------------------------------------------------------------------------------


def test_synthetic_cache_folder_is_the_same_in_every_process(tmp_path):
    """The cache key must not come from the built-in hash() of strings, which PYTHONHASHSEED
    changes per process: then every run wrote a new folder and none was ever reused."""
    import os
    import subprocess
    import sys

    code = ("from Datasets.synthetic import SyntheticConfig, load_synthetic; "
            "d = load_synthetic(0, SyntheticConfig(n_users=60, n_items=80)); print(d.report.source)")
    env = dict(os.environ)
    folders = set()
    for hash_seed in ("1", "2"):
        env["PYTHONHASHSEED"] = hash_seed
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout
        folders.add(out.strip().splitlines()[-1])
    assert len(folders) == 1, folders


def test_synthetic_is_deterministic_and_has_planted_structure():
    d1 = load("synthetic")
    from Datasets.synthetic import generate
    w = generate(seed=0)
    assert len(w["reviews"]) == len(d1.interactions)
    d2 = load("synthetic:1")
    assert len(d2.interactions) != len(d1.interactions) or not d2.interactions.equals(d1.interactions)
    t = d1.extra["truth"]
    df = d1.interactions
    items = df["item"].to_numpy()
    same_user = df["user"].to_numpy()[1:] == df["user"].to_numpy()[:-1]
    follow = (t["successor"][items[:-1]] == items[1:])[same_user].mean()
    assert follow > 0.3  # sequential structure: p_follow = 0.5 (minus repeats that get resampled)
    # multi-interest: most actions fall in the user's planted interest categories
    inter = t["user_interests"][df["user"].to_numpy(), t["item_category"][items]]
    assert (inter > 0).mean() > 0.75
    assert {"title", "brand", "category", "price"} <= set(d1.items.columns)


def test_ctr_impressions_labels_follow_planted_model():
    from Datasets.synthetic import click_logit, ctr_impressions
    d = load("synthetic")
    s = leave_one_out(d)
    imp = ctr_impressions(d, s, "train", n_candidates=4)
    logit = click_logit(d, imp["user"], imp["item"], imp["history"][:, -3:])
    hi, lo = logit > np.median(logit), logit <= np.median(logit)
    assert imp["label"][hi].mean() > imp["label"][lo].mean() + 0.2


# ---- bad input ----------------------------------------------------------------------------------------


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown data spec"):
        load("parquet:foo")
    with pytest.raises(DataError, match="does not exist"):
        load(f"seqtxt:{tmp_path / 'missing.txt'}")
    with pytest.raises(DataError, match="needs a path"):
        load("movielens")
    with pytest.raises(DataError, match="integer seed"):
        load("synthetic:abc")


def test_seqtxt_malformed_lines_counted(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n2 a b\n3 1 2 3\n1 4 5 6\n")
    d = load(f"seqtxt:{p}")
    assert d.report.malformed == 1 and d.report.duplicates == 1 and d.n_users == 2
    with pytest.raises(DataError, match="line 2"):
        load(f"seqtxt:{p}", strict=True)


def test_k_core_keeps_only_dense_part():
    d = load("synthetic")
    k = Datasets.k_core(d, 5)
    assert k.interactions.groupby("user").size().min() >= 5
    assert k.interactions.groupby("item").size().min() >= 5


def test_train_sequence_timestamps_align_with_items():
    s = leave_one_out(load("synthetic"))
    items, ts = s.train_sequences(20), s.train_sequence_timestamps(20)
    assert items.shape == ts.shape
    assert np.array_equal(items == 0, ts == 0)  # same padding slots (synthetic times are > 0)
    real = np.where(items > 0, ts, -1)
    assert np.all(np.diff(real, axis=1)[:, :] >= np.where(real[:, :-1] < 0, -np.inf, 0))
