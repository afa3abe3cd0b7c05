"""Feature-field CTR samples for the field-interaction rankers (Wide & Deep, DeepFM, DCN-V2,
AutoInt).

Every row is one impression: sparse fields `(N, F) int64` (1-based codes per field, 0 = padding),
optional dense fields `(N, Fd) float`, a 0/1 label and the user id (for GAUC).

- `libfm:PATH` (e.g. Frappe): the fields of the file. With a `train` part, train/validation/test are
  used as given. Without one (the shared Frappe copy holds only the validation and test files of the
  standard 7:2:1 split), the validation file is split at random into training rows and a held-out
  slice for early stopping; the test file is touched once, at the end.
- `synthetic`: the synthetic world's impressions (`Datasets.synthetic.ctr_impressions`: the true
  next item + popularity-sampled items, clicks drawn from a planted logistic model), as fields:
  user, item, category, brand, price bucket, and the item / category of the last two behaviours; one
  dense field, the item's log training popularity scaled to [0, 1].

    ctr = build_field_ctr(Datasets.load("synthetic"))
    batch = next(ctr.train.batches(256))   # sparse (b, F), dense (b, Fd), label (b,), user (b,)
    rows = ctr.candidate_rows(ctr.test.tensors["sparse"][0], items)   # one context x many items
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .BaseDatasets import CTRData, CTRDataset, DataError


@dataclass
class FieldCTR:
    train: CTRDataset
    valid: CTRDataset
    test: CTRDataset
    field_names: list[str]
    field_dims: list[int]  # vocabulary size per field, code 0 included
    dense_dim: int
    protocol: str
    item_field: int  # index of the item field
    # per item-dependent field index: (n_items+1,) code of that field for each item id
    item_columns: dict[int, np.ndarray] = field(default_factory=dict)
    item_dense: np.ndarray | None = None  # (n_items+1, Fd) dense fields of each item, or None
    item_text: object = None  # callable item id -> str
    # field name -> (field_dims[f],) raw id of each code as in the data file (code 0: "<pad>"), for
    # the fields whose raw ids the source keeps (users and items); others print as their codes
    raw_ids: dict[str, np.ndarray] = field(default_factory=dict)

    def candidate_rows(self, sparse_row: torch.Tensor, items: torch.Tensor,
                       dense_row: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One context (a row's user/context fields) crossed with many candidate items.

        Returns sparse (n, F) and dense (n, Fd) or None, every item-dependent field replaced."""
        n = len(items)
        sparse = sparse_row.unsqueeze(0).repeat(n, 1)
        for col, table in self.item_columns.items():
            sparse[:, col] = torch.as_tensor(table)[items]
        dense = None
        if self.dense_dim:
            dense = (torch.as_tensor(self.item_dense)[items].float() if self.item_dense is not None
                     else dense_row.unsqueeze(0).repeat(n, 1))
        return sparse, dense

    def describe_item(self, i: int) -> str:
        return self.item_text(int(i)) if self.item_text is not None else f"item #{int(i)}"

    def raw_id(self, field_name: str, code: int) -> str:
        """The raw id of `code` in field `field_name` as in the data file; '#code' when the source
        keeps no raw ids for that field."""
        raw = self.raw_ids.get(field_name)
        return str(raw[int(code)]) if raw is not None else f"#{int(code)}"

    def code_of(self, field_name: str, raw_id: str) -> int | None:
        """Inverse of `raw_id`: the code of a raw id (a string as in the data file), or None. For a
        field without raw ids, the code itself ('7' or '#7')."""
        raw = self.raw_ids.get(field_name)
        if raw is None:
            text = str(raw_id).removeprefix("#")
            n = self.field_dims[self.field_names.index(field_name)]
            return int(text) if text.isdigit() and 0 < int(text) < n else None
        hits = np.flatnonzero(np.asarray(raw[1:]).astype(str) == str(raw_id))
        return int(hits[0]) + 1 if len(hits) else None


def build_field_ctr(data, holdout: float = 0.1, seed: int = 0, max_len: int = 20) -> FieldCTR:
    """FieldCTR from a `CTRData` (libfm) or the synthetic `RecData` (needs its ground truth)."""
    if isinstance(data, CTRData):
        return _check_splits(_from_ctr_data(data, holdout, seed), data.name)
    if "truth" in getattr(data, "extra", {}):
        return _from_synthetic(data, seed, max_len)
    name = getattr(data, "name", data)
    raise ValueError(f"field CTR needs libfm:PATH or synthetic data, got {name}; behaviour-"
                     "sequence sources (seqtxt, amazon2018) go through Datasets.behavior_ctr")


def _check_splits(fc: FieldCTR, name: str) -> FieldCTR:
    """Training needs rows; early stopping and the test need both labels (AUC): a DataError that
    names the split otherwise, instead of a crash inside training or the metrics."""
    for split in ("train", "valid", "test"):
        label = getattr(fc, split).tensors["label"]
        if len(label) == 0:
            raise DataError(f"{name}: the {split} split has no rows ({fc.protocol}); expected "
                            "usable lines in every part (train/validation/test files), and a "
                            "--holdout that leaves rows on both sides")
        if split != "train" and label.min() == label.max():
            raise DataError(f"{name}: every {split} row has label {int(label[0])}; expected "
                            f"clicks and non-clicks in the {split} split (AUC needs both)")
    return fc


def _from_ctr_data(data: CTRData, holdout: float, seed: int) -> FieldCTR:
    if "test" not in data.parts:
        raise ValueError(f"{data.name}: needs a test part (a *.test.libfm file); "
                         f"parts: {list(data.parts)}")
    if "train" in data.parts:
        train_rows, valid_rows = data.parts["train"], data.parts["validation"]
        how = "train / validation / test files as given"
    else:
        train_rows, valid_rows = data.holdout("validation", holdout, seed=seed)
        how = (f"no train file: the validation file is split at random (seed {seed}) into "
               f"{len(train_rows):,} training rows and a {holdout:.0%} held-out slice "
               f"({len(valid_rows):,} rows) for early stopping")
    names = list(data.field_names)
    item_field = names.index("item") if "item" in names else 1
    # raw feature ids per field, when the loader keeps them (`CTRData.field_raw`: code c -> [c - 1])
    field_raw = getattr(data, "field_raw", None) or [None] * len(names)
    raw_ids = {n: np.concatenate([["<pad>"], np.asarray(r).astype(str)])
               for n, r in zip(names, field_raw) if r is not None}
    n_items = data.field_dims[item_field] - 1
    identity = np.arange(n_items + 1, dtype=np.int64)
    return FieldCTR(
        train=data.subset(train_rows), valid=data.subset(valid_rows), test=data.part("test"),
        field_names=names, field_dims=list(data.field_dims),
        dense_dim=0 if data.dense is None else data.dense.shape[1],
        protocol=f"{data.name}: {how}; metrics on the test file ({len(data.parts['test']):,} rows)",
        item_field=item_field, item_columns={item_field: identity},
        item_text=lambda i: f"{names[item_field]} {raw_ids[names[item_field]][i]}"
        if names[item_field] in raw_ids else f"{names[item_field]} #{i}",
        raw_ids=raw_ids,
    )


def _from_synthetic(data, seed: int, max_len: int) -> FieldCTR:
    from .BaseDatasets import leave_one_out
    from .synthetic import ctr_impressions

    split = leave_one_out(data)
    cat, brand, price = (data.item_feature(n) for n in ("category", "brand", "price_bucket"))
    counts = split.item_counts().astype(np.float64)
    pop = (np.log1p(counts) / np.log1p(counts.max()))[:, None].astype(np.float32)  # (n_items+1, 1)
    names = ["user", "item", "category", "brand", "price_bucket", "last_item", "last_category",
             "prev_item", "prev_category"]
    sets = {}
    for stage in ("train", "valid", "test"):
        imp = ctr_impressions(data, split, stage, max_len=max_len, seed=seed)
        last, prev = imp["history"][:, -1], imp["history"][:, -2]
        sparse = np.stack([imp["user"], imp["item"], imp["category"], imp["brand"],
                           imp["price_bucket"], last, cat[last], prev, cat[prev]], axis=1)
        sets[stage] = CTRDataset(sparse=sparse, labels=imp["label"], dense=pop[imp["item"]],
                                 users=imp["user"])
    dims = [int(max(s.tensors["sparse"][:, k].max() for s in sets.values())) + 1
            for k in range(len(names))]
    dims[1] = dims[5] = dims[7] = max(dims[1], dims[5], dims[7], data.n_items + 1)
    dims[2] = dims[6] = dims[8] = max(dims[2], dims[6], dims[8], int(cat.max()) + 1)
    dims[3], dims[4] = max(dims[3], int(brand.max()) + 1), max(dims[4], int(price.max()) + 1)
    dims = [max(d, 2) for d in dims]
    return FieldCTR(
        train=sets["train"], valid=sets["valid"], test=sets["test"], field_names=names,
        field_dims=dims, dense_dim=1,
        protocol=("synthetic impressions with planted clicks (true next item + 3 "
                  "popularity-sampled items per step); leave-one-out: train = every training "
                  "step, valid = second-to-last step, test = last step"),
        item_field=1, item_columns={1: np.arange(data.n_items + 1), 2: cat, 3: brand, 4: price},
        item_dense=pop, item_text=data.item_text,
        raw_ids={"user": np.asarray(data.user_raw).astype(str),
                 **{n: np.asarray(data.item_raw).astype(str) for n in ("item", "last_item",
                                                                       "prev_item")}},
    )
