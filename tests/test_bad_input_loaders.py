"""Bad input to the loaders: each case is a counted skip (the rest kept, the skip printed by
`Datasets.load`) or a one-line `DataError` that names the file and the line; never a bare traceback
from gzip, json, numpy or torch. `strict=True` turns each counted skip into a DataError with its line.
"""

from __future__ import annotations

import gzip
import json
import random
import socket

import pytest

from Datasets import DataError, leave_one_out, load
from Datasets import download as dl

# ---- file builders ---------------------------------------------------------------------------------

GOOD_LIBFM = ["1 0:1 10:1 20:1", "-1 1:1 11:1 21:1", "1 2:1 12:1 22:1", "-1 0:1 12:1 21:1"]


def _libfm(tmp, lines):
    p = tmp / "toy.libfm"
    p.write_text("\n".join(lines) + "\n")
    return f"libfm:{p}"


def _review(u, i, t, r=5.0):
    return json.dumps({"overall": r, "reviewerID": u, "asin": i, "unixReviewTime": t})


GOOD_REVIEWS = [_review(u, i, 100 * k + j) for k, u in enumerate("ABC") for j, i in enumerate("xyz")]


def _amazon(tmp, extra, gz=False):
    p = tmp / ("Toy_5.json.gz" if gz else "Toy_5.json")
    text = "\n".join(GOOD_REVIEWS + extra) + "\n"
    if gz:
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text)
    return f"amazon2018:{p}"


def _big_gzip(tmp, cut=None, flip=None):
    """A gzip of 3,000 distinct reviews, cut short at `cut` (a fraction) or with bytes changed."""
    rng = random.Random(0)
    lines = [_review(f"u{rng.randrange(10**9)}", f"i{rng.randrange(10**9)}", 1_500_000_000 + k)
             for k in range(3000)]
    blob = bytearray(gzip.compress(("\n".join(lines) + "\n").encode()))
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
    if flip is not None:
        at = int(len(blob) * flip)
        blob[at : at + 64] = bytes(64)
    p = tmp / "Toy_5.json.gz"
    p.write_bytes(bytes(blob))
    return f"amazon2018:{p}"


def _seqtxt(tmp, text, attrs=None, asin=None):
    p = tmp / "Toy.txt"
    p.write_text(text)
    if attrs is not None:
        (tmp / "Toy_item2attributes.json").write_text(attrs)
    if asin is not None:
        (tmp / "Toy_item2asin.tsv").write_text(asin)
    return f"seqtxt:{p}"


def _movielens(tmp, extra):
    d = tmp / "ml-toy"
    d.mkdir()
    rows = [f"{u}::{i}::4::{978300000 + 10 * u + i}" for u in (1, 2) for i in (1, 2, 3)]
    (d / "ratings.dat").write_text("\n".join(rows + extra) + "\n")
    (d / "movies.dat").write_text("1::A (1995)::Comedy\n2::B (1996)::Drama\n3::C (1997)::Drama\n")
    return f"movielens:{d}"


def _movielens_csv(tmp, extra, header="userId,movieId,rating,timestamp"):
    d = tmp / "ml-toy-csv"
    d.mkdir()
    rows = [header] + [f"{u},{i},4.0,{978300000 + i}" for u in (1, 2)
                                                  for i in (1, 2, 3)]
    (d / "ratings.csv").write_text("\n".join(rows + extra) + "\n")
    (d / "movies.csv").write_text("movieId,title,genres\n1,A,Comedy\n2,B,Drama\n3,C,Drama\n")
    return f"movielens:{d}"


# ---- counted skips: (id, build spec, report field or `other` key, count, kept) ----------------------

def libfm_with(line, first=False):
    """GOOD_LIBFM (4 lines of 3 fields) plus one bad `line`, first or last."""
    return lambda t: _libfm(t, [line] + GOOD_LIBFM if first else GOOD_LIBFM + [line])


def amazon_with(line, gz=False):
    return lambda t: _amazon(t, [line], gz)


NEG, NONNUM = "negative timestamp", "non-numeric rating/timestamp"
SKIPS = [
    ("libfm-bad-first-line", libfm_with("1 5:1", first=True), "malformed", 1, 4),
    ("libfm-extra-feature", libfm_with("1 0:1 10:1 20:1 30:1"), "malformed", 1, 4),
    ("libfm-value-x", libfm_with("1 3:x 10:1 20:1"), "malformed", 1, 4),
    ("libfm-value-0", libfm_with("1 3:0 10:1 20:1"), "malformed", 1, 4),
    ("libfm-value-half", libfm_with("1 3:0.5 10:1 20:1"), "malformed", 1, 4),
    ("libfm-negative-id", libfm_with("1 -3:1 10:1 20:1"), "malformed", 1, 4),
    ("libfm-bare-id", libfm_with("1 3 10:1 20:1"), "malformed", 1, 4),
    ("libfm-label-2", libfm_with("2 0:1 10:1 20:1"), "malformed", 1, 4),
    ("libfm-label-text", libfm_with("yes 0:1 10:1 20:1"), "malformed", 1, 4),
    ("libfm-label-only", libfm_with("1"), "malformed", 1, 4),
    ("amazon-negative-timestamp", amazon_with(_review("D", "x", -5)), NEG, 1, 9),
    ("amazon-missing-timestamp", amazon_with(json.dumps({"reviewerID": "D", "asin": "x"})),
     "missing_fields", 1, 9),
    ("amazon-text-timestamp", amazon_with(_review("D", "x", "soon")), "malformed", 1, 9),
    ("amazon-infinite-timestamp",
     amazon_with('{"reviewerID": "D", "asin": "x", "unixReviewTime": Infinity}'), "malformed", 1, 9),
    ("amazon-not-an-object", amazon_with("[1, 2, 3]"), "malformed", 1, 9),
    ("amazon-duplicate", amazon_with(GOOD_REVIEWS[0], gz=True), "duplicates", 1, 9),
    ("seqtxt-unicode-digit", lambda t: _seqtxt(t, "1 1 2 3\n2 1 \u00b2 3\n3 2 3 1\n"), "malformed", 1, 2),
    ("seqtxt-user-twice", lambda t: _seqtxt(t, "1 1 2 3\n1 3 2 1\n3 2 3 1\n"), "duplicates", 1, 2),
    ("movielens-negative-timestamp", lambda t: _movielens(t, ["3::1::4::-1"]), NEG, 1, 6),
    ("movielens-text-rating", lambda t: _movielens(t, ["3::1::good::978300000"]), NONNUM, 1, 6),
    ("movielens-empty-timestamp", lambda t: _movielens(t, ["3::1::4::"]), NONNUM, 1, 6),
    ("movielens-infinite-timestamp", lambda t: _movielens(t, ["3::1::4::inf"]), NONNUM, 1, 6),
    ("movielens-csv-negative-timestamp", lambda t: _movielens_csv(t, ["3,1,4.0,-7"]), NEG, 1, 6),
]


def _count(report, key):
    if key in ("malformed", "duplicates", "missing_fields"):
        return getattr(report, key)
    return report.other.get(key, 0)


@pytest.mark.parametrize("build,key,count,kept", [c[1:] for c in SKIPS], ids=[c[0] for c in SKIPS])
def test_counted_skip(build, key, count, kept, tmp_path, capsys):
    spec = build(tmp_path)
    data = load(spec)
    assert _count(data.report, key) == count and data.report.skipped == count
    assert data.report.kept == kept
    printed = capsys.readouterr().out
    assert printed.startswith("[data] ") and f"skipped {count:,}" in printed  # the skip is reported
    # strict: the same input raises with its line number
    with pytest.raises(DataError, match=r"line \d+") as e:
        load(spec, strict=True)
    assert "\n" not in str(e.value)


def test_libfm_field_count_is_the_common_count_not_the_first_lines(tmp_path):
    data = load(_libfm(tmp_path, ["1 5:1"] + GOOD_LIBFM))
    assert data.sparse.shape == (4, 3)
    assert data.report.examples[0].startswith("line 1: toy.libfm: 1 features")


# ---- one-line DataErrors: (id, build, call, regex) ---------------------------------------------------

def _split(spec):
    return leave_one_out(load(spec))


ERRORS = [
    ("amazon-truncated-gzip", lambda t: _big_gzip(t, cut=0.6), load,
     r"Toy_5\.json\.gz: the gzip stream ends early .* after line [1-9]"),
    ("amazon-corrupt-gzip", lambda t: _big_gzip(t, flip=0.5), load,
     r"Toy_5\.json\.gz: the gzip stream is corrupt .* after line"),
    ("amazon-gzip-header-only", lambda t: _big_gzip(t, cut=0.002), load,
     r"Toy_5\.json\.gz: the gzip stream .* after line \d"),
    ("every-user-dropped", lambda t: _seqtxt(t, "1 1 2\n2 3\n3 4 5\n"), _split,
     r"every user was dropped: all 3 users have fewer than 3 interactions \(the longest has 2\)"),
    ("libfm-no-usable-line", lambda t: _libfm(t, ["1 a:1", "x 1:1"]), load,
     r"no usable lines .* first problems: line 1"),
    ("libfm-empty-folder", lambda t: f"libfm:{t}", load, r"no \*\.libfm files"),
    ("seqtxt-bad-attributes-json", lambda t: _seqtxt(t, "1 1 2 3\n", attrs="{not json"), load,
     r"Toy_item2attributes\.json: expected a JSON object"),
    ("seqtxt-attributes-not-ids", lambda t: _seqtxt(t, "1 1 2 3\n", attrs='{"1": ["a"]}'), load,
     r"Toy_item2attributes\.json: expected a JSON object"),
    ("seqtxt-bad-asin-map", lambda t: _seqtxt(t, "1 1 2 3\n", asin="item\tasin\nx\tB00\n"), load,
     r"Toy_item2asin\.tsv: expected a header row"),
    ("seqtxt-only-malformed", lambda t: _seqtxt(t, "a b c\n"), load,
     r"no usable lines \(read 1; .* line 1: non-integer id"),
    ("movielens-csv-wrong-header", lambda t: _movielens_csv(t, [], header="a,b,c,d"), load,
     r"ratings\.csv: missing columns userId, movieId"),
]


@pytest.mark.parametrize("build,call,pattern", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_one_line_data_error(build, call, pattern, tmp_path):
    spec = build(tmp_path)
    with pytest.raises(DataError, match=pattern) as e:
        call(spec)
    assert "\n" not in str(e.value)


def test_truncated_gzip_names_the_line_reached_even_when_strict(tmp_path):
    spec = _big_gzip(tmp_path, cut=0.6)
    with pytest.raises(DataError) as e:
        load(spec, strict=True)
    reached = int(str(e.value).split("after line ")[1].split(";")[0].replace(",", ""))
    assert 0 < reached < 3000


# ---- downloads: the offline message names the exact path --------------------------------------------

def _dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def test_offline_download_names_the_path(tmp_path):
    dest = tmp_path / "sub" / "x.json.gz"
    with pytest.raises(dl.OfflineError) as e:
        dl.download(f"{_dead_url()}/x.json.gz", dest, progress=False, timeout=2)
    assert f"place it at {dest.resolve()} " in str(e.value) and "\n" not in str(e.value)


def test_offline_movielens_names_the_zip_path_and_uses_a_hand_placed_zip(tmp_path, capsys):
    url = _dead_url()
    with pytest.raises(dl.OfflineError, match=f"place it at {tmp_path.resolve() / 'ml-100k.zip'} "):
        dl.download_movielens("100k", tmp_path, base_url=url, progress=False, timeout=2)
    import zipfile
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as z:  # the user places the zip by hand
        z.writestr("ml-100k/u.data", "1\t1\t4\t5\n")
    out = dl.download_movielens("100k", tmp_path, base_url=url, progress=False, timeout=2)
    assert (out / "u.data").is_file() and "without the MD5 check" in capsys.readouterr().out


def test_download_cli_bad_category_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        dl.main(["amazon2018", "--category", "Beautyy"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: download failed: unknown Amazon 2018 category")
    assert err.count("\n") == 1

