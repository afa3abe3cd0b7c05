"""The canonical in-memory form every loader returns, the split, and the base Dataset classes.

Every source (Amazon 2018, seqtxt, MovieLens, the synthetic default) is parsed into one `RecData`:
interactions with contiguous integer ids (1-based; 0 is padding everywhere), an item side table, an
optional user table, the raw-id maps and a `LoadReport` of what was skipped. CTR sources in libFM format
become a `CTRData`. `leave_one_out` turns a `RecData` into the evaluation protocol of DESIGN.md.

All sample construction is vectorised with numpy/torch: no Python object per sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

PAD = 0


class DataError(ValueError):
    """Raised for unusable input data: names what was wrong and what was expected."""


# --------------------------------------------------------------------------------------------------
# Load report
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a loader read and what it skipped. Nothing is dropped without being counted here."""

    source: str = ""
    lines: int = 0
    kept: int = 0
    malformed: int = 0
    duplicates: int = 0
    missing_fields: int = 0
    other: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)  # first few problems, "line N: reason"

    def problem(self, kind: str, line_no: int, reason: str) -> None:
        if kind in ("malformed", "duplicates", "missing_fields"):
            setattr(self, kind, getattr(self, kind) + 1)
        else:
            self.other[kind] = self.other.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"line {line_no}: {reason}")

    @property
    def skipped(self) -> int:
        return self.malformed + self.duplicates + self.missing_fields + sum(self.other.values())

    def __str__(self) -> str:
        parts = [f"{self.source}: read {self.lines:,} records, kept {self.kept:,}"]
        if self.skipped:
            parts.append(
                f"skipped {self.skipped:,} (malformed {self.malformed:,}, duplicates "
                f"{self.duplicates:,}, missing fields {self.missing_fields:,}"
                + "".join(f", {k} {v:,}" for k, v in self.other.items())
                + ")"
            )
            parts.append("first problems: " + "; ".join(self.examples))
        return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Canonical interaction data
# --------------------------------------------------------------------------------------------------


@dataclass
class RecData:
    """Implicit-feedback data in canonical form.

    interactions: DataFrame with int64 columns `user`, `item`, `timestamp` (+ float `rating` when the
        source has one); ids are contiguous and 1-based (0 = padding); rows sorted by
        (user, timestamp, file order).
    items: DataFrame indexed by item id 0..n_items (row 0 is the padding row) with whatever the source
        has: `title` (str), `category` (str), `categories` (list[str]), `brand` (str), `price` (float),
        `attributes` (list[int]).
    users: DataFrame indexed by user id 0..n_users, or None.
    user_raw / item_raw: raw ids, position = contiguous id (position 0 = "<pad>").
    has_timestamps: False when the source gives order only (timestamp is then the position).
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    user_raw: np.ndarray
    item_raw: np.ndarray
    users: pd.DataFrame | None = None
    has_timestamps: bool = True
    report: LoadReport = field(default_factory=LoadReport)
    extra: dict = field(default_factory=dict)  # source-specific side data (e.g. item keywords)

    @property
    def n_users(self) -> int:
        return len(self.user_raw) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_raw) - 1

    def __repr__(self) -> str:
        return (
            f"RecData({self.name!r}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{len(self.interactions):,} interactions, item columns {list(self.items.columns)})"
        )

    # -- item features as integer codes --------------------------------------------------------
    def item_feature(self, name: str, n_buckets: int = 10) -> np.ndarray:
        """(n_items+1,) int64 codes of a categorical item column; 0 = padding/unknown.

        `price_bucket` quantile-buckets `price` into `n_buckets`. Codes are cached per name.
        """
        key = f"_code_{name}_{n_buckets}"
        if key in self.extra:
            return self.extra[key]
        if name == "price_bucket":
            if "price" not in self.items:
                raise DataError(f"{self.name}: no 'price' column; item columns: {list(self.items.columns)}")
            price = self.items["price"].to_numpy(dtype=float)
            codes = np.zeros(len(price), dtype=np.int64)
            ok = np.isfinite(price)
            ok[0] = False
            if ok.any():
                edges = np.unique(np.quantile(price[ok], np.linspace(0, 1, n_buckets + 1)[1:-1]))
                codes[ok] = np.searchsorted(edges, price[ok], side="right") + 1
        else:
            if name not in self.items:
                raise DataError(
                    f"{self.name}: no item column {name!r}; available: {list(self.items.columns)}"
                )
            col = self.items[name].copy()
            col.iloc[0] = None
            col = col.where(col.astype(str).str.len() > 0)
            codes_raw, _ = pd.factorize(col, sort=True)
            codes = (codes_raw + 1).astype(np.int64)  # factorize gives -1 for missing -> 0
        self.extra[key] = codes
        return codes

    def feature_size(self, name: str, n_buckets: int = 10) -> int:
        """Vocabulary size of `item_feature(name)` including the padding code 0."""
        return int(self.item_feature(name, n_buckets).max()) + 1

    def item_attributes(self, max_per_item: int = 8) -> np.ndarray:
        """(n_items+1, A) int64 attribute ids padded with 0 (seqtxt attributes or category+brand codes)."""
        if "attributes" in self.items:
            lists = self.items["attributes"].tolist()
        else:
            cols = [c for c in ("category", "brand") if c in self.items]
            if not cols:
                raise DataError(f"{self.name}: items have no attributes, category or brand column")
            offset, parts = 0, []
            for c in cols:
                code = self.item_feature(c)
                parts.append(np.where(code > 0, code + offset, 0))
                offset += int(code.max())
            mat = np.stack(parts, axis=1)
            return mat[:, :max_per_item].astype(np.int64)
        out = np.zeros((len(lists), max_per_item), dtype=np.int64)
        lens = np.array([0 if not isinstance(x, list) else min(len(x), max_per_item) for x in lists])
        flat = np.concatenate(
            [np.asarray(x[:max_per_item], dtype=np.int64) for x in lists if isinstance(x, list) and x]
            or [np.zeros(0, dtype=np.int64)]
        )
        rows = np.repeat(np.arange(len(lists)), lens)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
        out[rows, cols] = flat
        out[0] = 0
        return out

    def item_text(self, i: int) -> str:
        """A short human-readable description of item i for demos."""
        if i <= 0 or i > self.n_items:
            return "<pad>"
        row = self.items.iloc[i]
        bits = []
        if "title" in row and isinstance(row["title"], str) and row["title"]:
            bits.append(row["title"][:60])
        else:
            bits.append(f"item {self.item_raw[i]}")
            kw = row["keywords"] if "keywords" in row else None
            if isinstance(kw, list) and kw:  # Beauty: keyword tokens stand in for the title
                bits.append("~ " + " ".join(str(t).replace("\u2581", "") for t in kw[:4]))
        if "category" in row and isinstance(row["category"], str) and row["category"]:
            bits.append(f"[{row['category']}]")
        elif "attributes" in row and isinstance(row["attributes"], list):
            bits.append(f"attrs {row['attributes'][:4]}")
        return " ".join(bits)


def _contiguous(raw: pd.Series, universe=None, sort_ids: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to 1..n (0 = padding). Order: first appearance, or sorted when sort_ids; ids from
    `universe` (e.g. every item in a side file) join the catalogue even without interactions."""
    values = pd.Series(raw)
    if universe is not None:
        values = pd.concat([values, pd.Series(list(universe))], ignore_index=True)
    uniques = pd.unique(values)
    if sort_ids:
        uniques = np.array(sorted(uniques, key=_natural_key), dtype=object)
    codes = pd.Index(uniques).get_indexer(pd.Series(raw))
    table = np.concatenate([np.array(["<pad>"], dtype=object), np.asarray(uniques, dtype=object)])
    return codes.astype(np.int64) + 1, table


def _natural_key(x):
    """Sort numbers numerically and everything else as text (numbers first)."""
    try:
        return (0, float(x), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(x))


def make_rec_data(
    name: str,
    df: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    has_timestamps: bool = True,
    report: LoadReport | None = None,
    sort_ids: bool = False,
    user_universe=None,
    item_universe=None,
) -> RecData:
    """Build a RecData from raw columns `user`, `item`, `timestamp` (+ `rating`) with raw ids.

    items: optional table indexed by raw item id; users: optional table indexed by raw user id.
    Rows keep file order among equal timestamps (stable sort). Ids follow first appearance, or the
    sorted raw ids when `sort_ids` (so a file's own 1..n ids are kept); `*_universe` adds ids from side
    files (every movie in movies.dat) to the catalogue.
    """
    for col in ("user", "item", "timestamp"):
        if col not in df:
            raise DataError(f"{name}: interaction table lacks column {col!r}; has {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{name}: no interactions were read")
    uid, user_raw = _contiguous(df["user"], user_universe, sort_ids)
    iid, item_raw = _contiguous(df["item"], item_universe, sort_ids)
    out = pd.DataFrame({"user": uid, "item": iid, "timestamp": df["timestamp"].to_numpy(np.int64)})
    if "rating" in df:
        out["rating"] = df["rating"].to_numpy(np.float32)
    out = out.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)

    item_table = pd.DataFrame(index=pd.RangeIndex(len(item_raw), name="item"))
    if items is not None and len(items.columns):
        aligned = items.reindex(pd.Index(item_raw[1:], dtype=object))
        aligned.index = pd.RangeIndex(1, len(item_raw), name="item")
        pad = pd.DataFrame({c: [None] for c in aligned.columns}, index=pd.RangeIndex(0, 1, name="item"))
        item_table = pd.concat([pad, aligned])
        for c in item_table.columns:
            if c in ("title", "category", "brand"):
                item_table[c] = item_table[c].fillna("").astype(str)
            elif c in ("categories", "attributes"):
                item_table[c] = [x if isinstance(x, list) else [] for x in item_table[c]]
            elif c == "price":
                item_table[c] = pd.to_numeric(item_table[c], errors="coerce").astype(float)
    user_table = None
    if users is not None:
        aligned = users.reindex(pd.Index(user_raw[1:], dtype=object))
        aligned.index = pd.RangeIndex(1, len(user_raw), name="user")
        pad = pd.DataFrame({c: [None] for c in aligned.columns}, index=pd.RangeIndex(0, 1, name="user"))
        user_table = pd.concat([pad, aligned])
    rep = report or LoadReport(source=name)
    return RecData(name, out, item_table, user_raw, item_raw, user_table, has_timestamps, rep)


def k_core(data: RecData, k: int = 5, max_rounds: int = 100) -> RecData:
    """Iteratively keep users and items with at least k interactions; re-index ids contiguously."""
    if k <= 1:
        return data
    df = data.interactions
    for _ in range(max_rounds):
        uc = df["user"].map(df["user"].value_counts())
        ic = df["item"].map(df["item"].value_counts())
        keep = (uc >= k) & (ic >= k)
        if keep.all():
            break
        df = df[keep]
    if len(df) == 0:
        raise DataError(f"{data.name}: nothing survives a {k}-core filter")
    raw = pd.DataFrame(
        {
            "user": data.user_raw[df["user"].to_numpy()],
            "item": data.item_raw[df["item"].to_numpy()],
            "timestamp": df["timestamp"].to_numpy(),
        }
    )
    if "rating" in df:
        raw["rating"] = df["rating"].to_numpy()
    items = data.items.iloc[1:].copy()
    items.index = pd.Index(data.item_raw[1:], dtype=object)
    users = None
    if data.users is not None:
        users = data.users.iloc[1:].copy()
        users.index = pd.Index(data.user_raw[1:], dtype=object)
    rep = data.report
    rep.other[f"removed by {k}-core"] = len(data.interactions) - len(df)
    out = make_rec_data(data.name, raw, items, users, data.has_timestamps, rep, sort_ids=True)
    out.extra = {k2: v for k2, v in data.extra.items() if not k2.startswith("_code_")}
    return out


# --------------------------------------------------------------------------------------------------
# Leave-one-out split
# --------------------------------------------------------------------------------------------------


def _left_pad_windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """Rows of items[max(start, end-max_len):end], left-padded with 0 to max_len. Vectorised."""
    idx = ends[:, None] - np.arange(max_len, 0, -1)[None, :]  # (S, L)
    valid = idx >= starts[:, None]
    safe = np.where(valid, idx, 0)
    return np.where(valid, items[safe] if len(items) else 0, PAD).astype(np.int64)


@dataclass
class LOOSplit:
    """Leave-one-out by time: per user, last item = test, the one before = validation, rest = train.

    The training part is stored in CSR form: user u's (row r) items are
    train_items[train_offsets[r]:train_offsets[r+1]] in time order.
    """

    name: str
    n_items: int
    users: np.ndarray  # (U,) user ids
    train_offsets: np.ndarray  # (U+1,)
    train_items: np.ndarray
    train_timestamps: np.ndarray
    valid_items: np.ndarray  # (U,)
    valid_timestamps: np.ndarray
    test_items: np.ndarray  # (U,)
    test_timestamps: np.ndarray
    n_dropped_users: int = 0
    refit: bool = False  # True: the training part holds the validation item (see `refit_split`)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def refit_split(self) -> LOOSplit:
        """The split of the refit protocol: the validation item joins the end of each user's
        training part (every interaction but the test item), there is no validation stage, and the
        test is unchanged (its history is the new training part). Used to retrain for an epoch
        count chosen earlier on validation, as published holdout numbers are often produced."""
        if self.refit:
            raise ValueError("this split is already a refit split")
        offsets, items, ts = self._full("test")
        return dataclasses.replace(
            self, train_offsets=offsets, train_items=items, train_timestamps=ts,
            valid_items=np.zeros(0, dtype=np.int64), valid_timestamps=np.zeros(0, dtype=np.int64),
            refit=True)

    def __repr__(self) -> str:
        return (
            f"LOOSplit({self.name!r}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{len(self.train_items):,} train interactions, {self.n_dropped_users:,} users dropped)"
        )

    def _full(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of the history available before predicting `stage` (train, or train + valid)."""
        if self.refit and stage in ("valid", "test"):
            if stage == "valid":
                raise ValueError("a refit split has no validation stage: its validation item is "
                                 "part of training")
            return self.train_offsets, self.train_items, self.train_timestamps
        if stage == "valid":
            return self.train_offsets, self.train_items, self.train_timestamps
        if stage != "test":
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        key = "_test_csr"
        cached = getattr(self, key, None)
        if cached is not None:
            return cached
        lens = np.diff(self.train_offsets) + 1
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        items = np.empty(offsets[-1], dtype=np.int64)
        ts = np.empty(offsets[-1], dtype=np.int64)
        last = offsets[1:] - 1
        mask = np.ones(offsets[-1], dtype=bool)
        mask[last] = False
        items[mask], ts[mask] = self.train_items, self.train_timestamps
        items[last], ts[last] = self.valid_items, self.valid_timestamps
        object.__setattr__(self, key, (offsets, items, ts))
        return offsets, items, ts

    def seen(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, items) CSR of the items each user has interacted with before `stage`'s target."""
        offsets, items, _ = self._full(stage)
        return offsets, items

    def history(self, stage: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded (U, max_len) item and timestamp histories used to predict `stage`'s target."""
        offsets, items, ts = self._full(stage)
        h = _left_pad_windows(items, offsets[:-1], offsets[1:], max_len)
        t = _left_pad_windows(ts, offsets[:-1], offsets[1:], max_len)
        return h, t

    def targets(self, stage: str) -> np.ndarray:
        if stage == "valid" and self.refit:
            raise ValueError("a refit split has no validation stage: its validation item is part "
                             "of training")
        if stage == "valid":
            return self.valid_items
        if stage == "test":
            return self.test_items
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def target_timestamps(self, stage: str) -> np.ndarray:
        return self.valid_timestamps if stage == "valid" else self.test_timestamps

    def train_sequences(self, max_len: int) -> np.ndarray:
        """(U, max_len+1) left-padded training sequences (the last max_len+1 items of each user):
        inputs are [:, :-1], next-item labels [:, 1:] (SASRec-style)."""
        o = self.train_offsets
        return _left_pad_windows(self.train_items, o[:-1], o[1:], max_len + 1)

    def train_sequence_timestamps(self, max_len: int) -> np.ndarray:
        """(U, max_len+1) timestamps of the same windows as `train_sequences` (0 at padding)."""
        o = self.train_offsets
        return _left_pad_windows(self.train_timestamps, o[:-1], o[1:], max_len + 1)

    def next_item_examples(
        self, max_len: int, max_per_user: int | None = None, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """Every prefix of every training sequence: predict train item t from the items before it.

        max_per_user caps the examples per user (a random subset, as YoutubeDNN does so heavy users
        do not dominate). Returns tensors: user (S,), row (S,), history (S, L), history_ts (S, L),
        target (S,), target_ts (S,).
        """
        return self.next_item_batch(self.next_item_index(max_per_user, seed), max_len)

    def next_item_index(self, max_per_user: int | None = None, seed: int = 0) -> np.ndarray:
        """The examples of `next_item_examples` as positions in `train_items` (S,) int64, one per
        target, without building any history: 8 bytes an example instead of 16 * max_len + 32, so the
        million-item world's 8.1M examples take 65 MB, and `next_item_batch` cuts the histories of
        one batch at a time."""
        o = self.train_offsets
        lens = np.diff(o)
        pos = np.arange(len(self.train_items)) - np.repeat(o[:-1], lens)  # position within user
        keep = pos >= 1
        if max_per_user is not None:
            if max_per_user < 1:
                raise ValueError(f"max_per_user must be >= 1 or None, got {max_per_user}")
            row = np.repeat(np.arange(self.n_users), lens)
            # a random order of each user's examples; keep the first max_per_user of them
            key = np.random.default_rng(seed).random(len(pos))
            keep &= _rank_within_user(key, keep, row, o) < max_per_user
        return np.nonzero(keep)[0]

    def next_item_batch(self, g: np.ndarray, max_len: int) -> dict[str, torch.Tensor]:
        """The examples at positions g of `train_items` (from `next_item_index`), in that order, with
        the same tensors as `next_item_examples`: one vectorised gather of their histories."""
        g = np.asarray(g, dtype=np.int64)
        o = self.train_offsets
        row = np.searchsorted(o, g, side="right") - 1  # the user row holding each position
        starts = o[row]
        hist = _left_pad_windows(self.train_items, starts, g, max_len)
        hist_ts = _left_pad_windows(self.train_timestamps, starts, g, max_len)
        return {
            "user": torch.from_numpy(self.users[row]),
            "row": torch.from_numpy(row),
            "history": torch.from_numpy(hist),
            "history_ts": torch.from_numpy(hist_ts),
            "target": torch.from_numpy(self.train_items[g]),
            "target_ts": torch.from_numpy(self.train_timestamps[g]),
        }

    def item_counts(self) -> np.ndarray:
        """(n_items+1,) number of training interactions per item (index 0 = padding = 0)."""
        return np.bincount(self.train_items, minlength=self.n_items + 1).astype(np.int64)


def _rank_within_user(key: np.ndarray, valid: np.ndarray, row: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Rank of each valid entry among its user's valid entries by ascending key (invalid: huge)."""
    order = np.lexsort((key, ~valid, row))
    counts = np.diff(o)
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key)) - np.repeat(o[:-1], counts)
    return np.where(valid, rank, len(key))


def leave_one_out(data: RecData, min_len: int = 3) -> LOOSplit:
    """Split each user's chronological sequence: last -> test, second to last -> validation.

    Users with fewer than `min_len` interactions (at least one training item is needed) are dropped
    and counted in `n_dropped_users`.
    """
    if min_len < 3:
        raise ValueError(f"min_len must be >= 3 (one train, one valid, one test item), got {min_len}")
    df = data.interactions
    users = df["user"].to_numpy()
    items = df["item"].to_numpy()
    ts = df["timestamp"].to_numpy()
    # rows are sorted by (user, timestamp); find each user's block
    uniq, starts, counts = np.unique(users, return_index=True, return_counts=True)
    keep_u = counts >= min_len
    n_dropped = int((~keep_u).sum())
    if not keep_u.any():
        longest = int(counts.max()) if len(counts) else 0
        raise DataError(
            f"{data.name}: every user was dropped: all {n_dropped:,} users have fewer than {min_len} "
            f"interactions (the longest has {longest}); leave-one-out needs at least one training, "
            f"one validation and one test item per user"
        )
    uniq, starts, counts = uniq[keep_u], starts[keep_u], counts[keep_u]
    ends = starts + counts
    test_idx, valid_idx = ends - 1, ends - 2
    tr_lens = counts - 2
    offsets = np.concatenate([[0], np.cumsum(tr_lens)]).astype(np.int64)
    tr_idx = np.repeat(starts - offsets[:-1], tr_lens) + np.arange(offsets[-1])
    return LOOSplit(
        name=data.name,
        n_items=data.n_items,
        users=uniq.astype(np.int64),
        train_offsets=offsets,
        train_items=items[tr_idx].astype(np.int64),
        train_timestamps=ts[tr_idx].astype(np.int64),
        valid_items=items[valid_idx].astype(np.int64),
        valid_timestamps=ts[valid_idx].astype(np.int64),
        test_items=items[test_idx].astype(np.int64),
        test_timestamps=ts[test_idx].astype(np.int64),
        n_dropped_users=n_dropped,
    )


# --------------------------------------------------------------------------------------------------
# CTR data (libFM and impressions)
# --------------------------------------------------------------------------------------------------


@dataclass
class CTRData:
    """Feature-field CTR data.

    sparse: (N, F) int64 per-field codes, 1-based within each field (0 = padding/unknown).
    dense: (N, Fd) float32 or None.  labels: (N,) float32 in {0, 1}.
    field_names: F names; field_dims: vocabulary size per field including code 0.
    parts: named row-index arrays (e.g. 'train', 'validation', 'test' — one per source file).
    users: (N,) int64 user id per row when known (for GAUC), else None.
    field_raw: per field, the source's feature ids (code c -> field_raw[k][c - 1]), when the loader
        keeps them (libFM), else None.
    """

    name: str
    sparse: np.ndarray
    labels: np.ndarray
    field_names: list[str]
    field_dims: list[int]
    parts: dict[str, np.ndarray]
    dense: np.ndarray | None = None
    users: np.ndarray | None = None
    report: LoadReport = field(default_factory=LoadReport)
    field_raw: list | None = None

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {len(v):,}" for k, v in self.parts.items())
        return (
            f"CTRData({self.name!r}: {len(self.labels):,} rows ({parts}), {len(self.field_names)} "
            f"fields, positive rate {self.labels.mean():.3f})"
        )

    def part(self, name: str) -> CTRDataset:
        if name not in self.parts:
            raise KeyError(f"{self.name}: no part {name!r}; parts: {list(self.parts)}")
        return self.subset(self.parts[name])

    def subset(self, rows: np.ndarray) -> CTRDataset:
        return CTRDataset(
            sparse=self.sparse[rows],
            labels=self.labels[rows],
            dense=None if self.dense is None else self.dense[rows],
            users=None if self.users is None else self.users[rows],
        )

    def holdout(self, part: str, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Split the rows of `part` at random into (rest, held-out fraction)."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
        rows = self.parts[part]
        perm = np.random.default_rng(seed).permutation(len(rows))
        n_out = int(round(len(rows) * fraction))
        return rows[perm[n_out:]], rows[perm[:n_out]]


# --------------------------------------------------------------------------------------------------
# torch Datasets built from tensors
# --------------------------------------------------------------------------------------------------


class TensorDictDataset(Dataset):
    """A Dataset over a dict of equally long tensors; __getitem__ accepts an index tensor too, so a
    BatchSampler can pull whole batches with one fancy-indexing op (see `batches`)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors must have equal length, got {lengths}")
        self.tensors = tensors
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}

    def batches(self, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False):
        """Yield dict batches by fancy indexing: fast, no per-sample Python."""
        order = torch.randperm(self.n, generator=generator) if shuffle else torch.arange(self.n)
        stop = self.n - (self.n % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            yield self[order[s : s + batch_size]]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return self.n // batch_size if drop_last else -(-self.n // batch_size)


class RecallDataset(TensorDictDataset):
    """History -> next item (with optional sampled negatives per example).

    Built from `LOOSplit.next_item_examples`; `negatives(n)` draws uniform negatives for all examples
    at once (collisions with the target are resampled).
    """

    def __init__(self, split: LOOSplit, max_len: int = 50, max_per_user: int | None = None, seed: int = 0):
        super().__init__(split.next_item_examples(max_len, max_per_user=max_per_user, seed=seed))
        self.n_items = split.n_items

    def add_negatives(self, n_neg: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        target = self.tensors["target"]
        neg = torch.randint(1, self.n_items + 1, (self.n, n_neg), generator=g)
        clash = neg == target[:, None]
        while clash.any():
            neg[clash] = torch.randint(1, self.n_items + 1, (int(clash.sum()),), generator=g)
            clash = neg == target[:, None]
        self.tensors["negatives"] = neg


class CTRDataset(TensorDictDataset):
    """Feature fields -> label: sparse (N, F) int64, dense (N, Fd) float, label (N,), user (N,)."""

    def __init__(self, sparse, labels, dense=None, users=None, **extra):
        t = {"sparse": torch.as_tensor(sparse, dtype=torch.long),
             "label": torch.as_tensor(labels, dtype=torch.float32)}
        if dense is not None:
            t["dense"] = torch.as_tensor(dense, dtype=torch.float32)
        if users is not None:
            t["user"] = torch.as_tensor(users, dtype=torch.long)
        for k, v in extra.items():
            t[k] = torch.as_tensor(v)
        super().__init__(t)


class RerankDataset(TensorDictDataset):
    """Candidate lists: items (U, N) in the initial ranker's order, init_scores (U, N),
    labels (U, N) in {0, 1}, plus anything else per list (e.g. user, categories (U, N))."""

    def __init__(self, items, init_scores, labels, **extra):
        t = {"items": torch.as_tensor(items, dtype=torch.long),
             "init_scores": torch.as_tensor(init_scores, dtype=torch.float32),
             "labels": torch.as_tensor(labels, dtype=torch.float32)}
        for k, v in extra.items():
            t[k] = torch.as_tensor(v)
        shapes = {k: tuple(v.shape[:2]) for k, v in t.items() if v.dim() >= 2}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"list tensors must share (U, N), got {shapes}")
        super().__init__(t)
