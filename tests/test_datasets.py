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


def _next_item_examples_before(s, max_len, max_per_user=None, seed=0):
    """next_item_examples as it was before next_item_index / next_item_batch (the reference)."""
    from Datasets.BaseDatasets import _left_pad_windows, _rank_within_user
    o = s.train_offsets
    lens = np.diff(o)
    pos = np.arange(len(s.train_items)) - np.repeat(o[:-1], lens)
    row = np.repeat(np.arange(s.n_users), lens)
    keep = pos >= 1
    if max_per_user is not None:
        key = np.random.default_rng(seed).random(len(pos))
        keep &= _rank_within_user(key, keep, row, o) < max_per_user
    g = np.nonzero(keep)[0]
    starts = o[row[g]]
    return {"user": s.users[row[g]], "row": row[g],
            "history": _left_pad_windows(s.train_items, starts, g, max_len),
            "history_ts": _left_pad_windows(s.train_timestamps, starts, g, max_len),
            "target": s.train_items[g], "target_ts": s.train_timestamps[g]}


def test_bounded_next_item_batches_equal_the_materialised_examples():
    """next_item_index + next_item_batch (one batch at a time, any order) give exactly the examples the
    materialised builder gave, capped or not; users with an empty training part are skipped."""
    from Datasets.BaseDatasets import LOOSplit
    rng = np.random.default_rng(0)
    lens = np.array([0, 1, 5, 0, 2, 9, 3, 0, 1, 7])  # empty and one-item training parts included
    o = np.concatenate([[0], np.cumsum(lens)])
    items = rng.integers(1, 20, o[-1])
    n = len(lens)
    s = LOOSplit("t", 20, np.arange(100, 100 + n), o, items, np.arange(o[-1]) * 10,
                 np.ones(n, np.int64), np.zeros(n, np.int64), np.ones(n, np.int64), np.zeros(n, np.int64))
    for cap, max_len in [(None, 4), (2, 3), (1, 12)]:
        want = _next_item_examples_before(s, max_len, max_per_user=cap, seed=3)
        got = s.next_item_examples(max_len, max_per_user=cap, seed=3)
        assert set(got) == set(want)
        for k in want:
            assert got[k].numpy().tolist() == want[k].tolist(), (k, cap)
        g = s.next_item_index(max_per_user=cap, seed=3)
        order = rng.permutation(len(g))
        for part in np.array_split(order, 3):  # shuffled batches = the same rows of the examples
            batch = s.next_item_batch(g[part], max_len)
            for k in want:
                assert batch[k].numpy().tolist() == want[k][part].tolist(), (k, cap)


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


# ---- item titles beside a seqtxt file (`*_item_titles.tsv`) ---------------------------------------


@pytest.mark.realdata
def test_beauty_titles_reach_the_item_table():
    p = shared_path("amazon-beauty", "Beauty.txt")
    d = load(f"seqtxt:{p}")
    titles = d.items["title"]
    assert titles[0] == "" and (titles[1:] != "").sum() == 12_086  # 15 items have no title
    assert titles[1] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert not titles.str.contains("&amp;").any()  # HTML entities decoded
    assert d.item_text(1).startswith("OPI Nail Lacquer")  # what every demo prints
    assert d.report.skipped == 0


def test_seqtxt_titles_read_counted_and_strict(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n2 3 2 1\n")
    load_plain = load(f"seqtxt:{p}")
    assert "title" not in load_plain.items  # no side file: no title column
    (tmp_path / "s_item2asin.tsv").write_text("item_id\tasin\n1\tA1\n2\tA2\n3\tA3\n")
    (tmp_path / "s_item_titles.tsv").write_text(
        "item_id\tasin\ttitle\n"
        "1\tA1\tSoap &amp; Water\n"   # entity decoded
        "x\tA2\tnot an id\n"          # line 3: malformed
        "2\tA2\t\n"                   # empty title is kept as ""
        "1\tA1\tagain\n"              # line 5: duplicate item
        "3\tZZ\twrong asin\n"         # line 6: the ASIN names another item
    )
    d = load(f"seqtxt:{p}")
    assert d.items["title"].tolist() == ["", "Soap & Water", "", ""]
    assert d.report.other == {"titles malformed": 1, "titles duplicates": 1, "titles asin mismatch": 1}
    assert any("line 3" in e and "s_item_titles.tsv" in e for e in d.report.examples)
    assert "titles malformed 1" in str(d.report)
    with pytest.raises(DataError, match="line 3"):
        load(f"seqtxt:{p}", strict=True)


# ==== at scale: `synthetic:scale=N` and the streaming Amazon 2018 loader ================================
# (the 1M-item world itself is built by `python -m Utils.tools.stream_loader` and the scale_eval /
# ann_scale benchmarks; these tests use a few thousand items and the same code)


def test_scale_specs_parse_and_bad_ones_are_clear():
    from Datasets.synthetic import parse_scale, parse_synthetic_arg

    assert parse_synthetic_arg("") == (0, None) and parse_synthetic_arg("3") == (3, None)
    assert parse_synthetic_arg("scale=1m") == (0, 1_000_000)
    assert parse_synthetic_arg("scale=200k,seed=2") == (2, 200_000) == parse_synthetic_arg("2,scale=200k")
    assert parse_scale("1.5m") == 1_500_000 and parse_scale("50000") == 50_000
    for spec, msg in (("synthetic:scale=lots", "item count"), ("synthetic:scale=100", "at least 1200"),
                      ("synthetic:size=1m", "unknown option"), ("synthetic:scale=1m,seed=x", "integer seed")):
        with pytest.raises(DataError, match=msg):
            load(spec)


def test_scaled_world_has_the_planted_structure():
    import pandas as pd

    d = load("synthetic:scale=6000")
    assert (d.n_items, d.n_users) == (6000, 4140) and 8 < len(d.interactions) / d.n_items < 12
    assert d.interactions.equals(load("synthetic:scale=6000").interactions)  # deterministic
    assert not d.interactions.equals(load("synthetic:scale=6000,seed=1").interactions)
    t, df = d.extra["truth"], d.interactions
    users, items, ts = df["user"].to_numpy(), df["item"].to_numpy(), df["timestamp"].to_numpy()
    same_user = users[1:] == users[:-1]
    # sequential transitions, multi-interest users, price tiers: as in the default world
    assert (t["successor"][items[:-1]] == items[1:])[same_user].mean() > 0.35
    assert (t["user_interests"][users, t["item_category"][items]] > 0).mean() > 0.75
    assert (t["user_tier"][users] == t["item_tier"][items]).mean() > 0.42  # 1/3 if tiers did not matter
    # mostly new items, time order, sessions (minutes apart) separated by days
    assert len(np.unique(users * (d.n_items + 1) + items)) == len(df)
    gaps = np.diff(ts)[same_user]
    assert gaps.min() >= 30 and np.all((gaps < 600) | (gaps >= 86400)) and 0.5 < (gaps < 600).mean() < 0.9
    # items: variant groups share brand and category, successors leave the group, Zipf popularity
    groups = pd.DataFrame({"g": t["item_group"][1:], "b": t["item_brand"][1:], "c": t["item_category"][1:]})
    assert groups.groupby("g").nunique().max().tolist() == [1, 1]
    succ = t["successor"][1:]
    assert not np.any(t["item_group"][succ] == t["item_group"][1:])
    assert 0.65 < (t["item_category"][succ] == t["item_category"][1:]).mean() < 0.75
    counts = np.bincount(items, minlength=d.n_items + 1)[1:]
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(counts), rank(t["popularity"][1:]))[0, 1] > 0.5
    assert d.items["title"][1].startswith(d.items["brand"][1]) and d.item_text(1).endswith("[Skin Care]")


def test_scaled_world_reads_back_through_the_amazon_loader(tmp_path, monkeypatch):
    """The files `write_scaled_reviews` writes, read by `amazon2018:`, hold the world that
    `synthetic:scale=N` builds in memory; small user blocks exercise the block boundaries."""
    import pandas as pd

    from Datasets import synthetic

    monkeypatch.setattr(synthetic, "USER_BLOCK", 1000)
    direct = synthetic.load_synthetic_scaled(4, 3000)
    rp = synthetic.write_scaled_reviews(tmp_path, seed=4, n_items=3000)
    read = load(f"amazon2018:{rp},{tmp_path / 'meta.json.gz'}")
    assert read.report.skipped == 0 and read.report.lines == len(direct.interactions)

    def raw(d):
        df = d.interactions
        return pd.DataFrame({"user": d.user_raw[df["user"]], "item": d.item_raw[df["item"]],
                             "timestamp": df["timestamp"], "rating": df["rating"]})

    pd.testing.assert_frame_equal(raw(direct), raw(read))
    bought = read.item_raw[1:]
    a = direct.items.iloc[1:].set_axis(direct.item_raw[1:]).loc[bought]
    b = read.items.iloc[1:].set_axis(bought)
    for col in ("title", "brand", "category", "price"):
        assert a[col].tolist() == b[col].tolist(), col


def _reviews_file(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_streaming_loader_gives_the_same_data_whatever_the_chunk(amazon_files, monkeypatch):
    from Datasets import amazon2018

    rp, _ = amazon_files
    ref = load(f"amazon2018:{rp}")
    for chunk in (1, 2, 3):
        monkeypatch.setattr(amazon2018, "CHUNK_LINES", chunk)
        monkeypatch.setattr(amazon2018.read_review_codes, "__defaults__", (False, chunk))
        d = load(f"amazon2018:{rp}")
        assert d.interactions.equals(ref.interactions) and list(d.item_raw) == list(ref.item_raw)
        assert str(d.report) == str(ref.report) and d.report.examples == ref.report.examples
    codes, report = amazon2018.read_review_codes(rp, chunk_lines=2)
    assert codes.user.dtype == np.int32 and len(codes) == report.kept == 7


def test_streaming_loader_strict_raises_the_first_problem_in_file_order(tmp_path):
    """Duplicates are found after the last chunk; strict mode must still name the first problem."""
    from Datasets.amazon2018 import read_review_codes

    r = [_review("A", f"x{k}", k) for k in range(6)]
    dup_first = _reviews_file(tmp_path / "a.json", r[:3] + [r[1], "{bad"] + r[3:])  # dup line 4, bad line 5
    bad_first = _reviews_file(tmp_path / "b.json", r[:3] + ["{bad", r[1]] + r[3:])  # bad line 4, dup line 5
    for chunk in (1, 2, 100):
        with pytest.raises(DataError, match=r"a\.json: line 4: duplicate review A/x1 at 1"):
            read_review_codes(dup_first, strict=True, chunk_lines=chunk)
        with pytest.raises(DataError, match=r"b\.json: line 4: not a JSON object"):
            read_review_codes(bad_first, strict=True, chunk_lines=chunk)
        _, report = read_review_codes(dup_first, chunk_lines=chunk)
        assert (report.duplicates, report.malformed) == (1, 1)
        assert report.examples == ["line 4: duplicate review A/x1 at 1", "line 5: not a JSON object"]


def test_streaming_loader_memory_does_not_grow_with_the_file(tmp_path):
    """Peak Python memory while streaming chunks of a file is the same for 2,000 and 20,000 lines
    (the same few users and items, so the id maps do not grow; a list of parsed rows would)."""
    import tracemalloc

    from Datasets.amazon2018 import LoadReport, iter_review_chunks

    peaks = []
    for n in (2_000, 20_000):
        p = tmp_path / f"r{n}.json.gz"
        with gzip.open(p, "wt") as f:
            f.writelines(_review(f"u{k % 50}", f"i{k % 70}", k) + "\n" for k in range(n))
        tracemalloc.start()
        rows = sum(len(c["user"]) for c in iter_review_chunks(p, LoadReport(), chunk_lines=500))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert rows == n
    assert peaks[1] < 1.3 * peaks[0], peaks


def test_streaming_loader_yields_before_the_end_of_the_file(tmp_path):
    """Chunks come out as the file is read: a gzip cut near its end still yields its first chunks
    before the one-line DataError about the cut."""
    from Datasets.amazon2018 import LoadReport, iter_review_chunks

    p = tmp_path / "cut.json.gz"
    blob = gzip.compress(("\n".join(_review(f"u{k}", "i", k) for k in range(20_000)) + "\n").encode())
    p.write_bytes(blob[: int(len(blob) * 0.9)])
    got = []
    with pytest.raises(DataError, match="ends early"):
        for chunk in iter_review_chunks(p, LoadReport(), chunk_lines=1000):
            got.append(len(chunk["user"]))
    assert len(got) >= 10 and set(got) == {1000}


def test_streaming_loader_fast_json_path_keeps_the_json_rules(tmp_path):
    """The per-line fast path must accept and refuse exactly what json.loads (then the 2014 Python
    literal rule) does: padding and CRLF are fine, a second value on the line is malformed."""
    from Datasets.amazon2018 import read_review_codes

    good = _review("A", "x1", 1)
    p = _reviews_file(tmp_path / "r.json", [
        good, "  " + _review("A", "x2", 2), _review("A", "x3", 3) + "\r", _review("A", "x4", 4) + " \t",
        _review("B", "x1", 5) + ' {"extra": 1}', _review("B", "x2", 6) + "]", "{'reviewerID': 'B', "
        "'asin': 'x3', 'unixReviewTime': 7}", _review("B", "x4", 8) + ", 1"])
    codes, report = read_review_codes(p)
    assert report.kept == 5 and report.malformed == 3
    assert [e.split(":")[0] for e in report.examples] == ["line 5", "line 6", "line 8"]


@pytest.mark.slow  # builds the 1M-item world: ~25 s on an idle core, 1.5 GB
def test_million_item_world():
    d = load("synthetic:scale=1m")
    assert (d.n_items, d.n_users) == (999_996, 690_000) and 9_500_000 < len(d.interactions) < 11_000_000
    t, df = d.extra["truth"], d.interactions
    users, items = df["user"].to_numpy(), df["item"].to_numpy()
    same_user = users[1:] == users[:-1]
    assert (t["successor"][items[:-1]] == items[1:])[same_user].mean() > 0.35
    assert (t["user_interests"][users, t["item_category"][items]] > 0).mean() > 0.75
    s = leave_one_out(d)
    assert s.n_users == 690_000 and s.n_dropped_users == 0


def test_leave_one_out_puts_every_interaction_in_exactly_one_part(tmp_path):
    """Train = every interaction but each user's last two, in order; validation = the second to
    last; test = the last. Rebuilding each user's sequence from the three parts gives it back exactly
    (an off-by-one that leaks the validation item into training breaks this)."""
    p = tmp_path / "x.txt"
    # unequal lengths, an item repeated inside a user's sequence, users sharing items
    p.write_text("1 4 5 6\n2 7 7 8 9 4 5\n3 1 2 3\n4 2 9 9 9 1\n")
    for data in (load(f"seqtxt:{p}"), load("synthetic")):
        s = leave_one_out(data)
        seqs = data.interactions.groupby("user", sort=True)["item"].apply(list)
        assert len(s.train_items) + 2 * s.n_users == sum(len(seqs[u]) for u in s.users)
        for r, u in enumerate(s.users):
            train = list(s.train_items[s.train_offsets[r]:s.train_offsets[r + 1]])
            assert train + [s.valid_items[r], s.test_items[r]] == seqs[u]
            assert train == seqs[u][:-2]
        # the validation stage never sees its own target; the test stage sees it last
        hist, _ = s.history("valid", 64)
        real = [list(h[h != 0]) for h in hist]
        assert all(r_ == list(seqs[u][:-2]) for r_, u in zip(real, s.users))
