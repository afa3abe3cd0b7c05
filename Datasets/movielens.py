"""MovieLens loader: ml-100k (`u.data`, `u.item`, `u.user`), ml-1m (`ratings.dat`, `movies.dat`,
`users.dat`, `::`-separated, ISO-8859-1 or UTF-8) and ml-20m / ml-25m (`ratings.csv`, `movies.csv`).

Every movie in the movie file and every user in the user file joins the catalogue, even without a
rating (so a sampled ratings file still sees the whole catalogue). Genres are split into
`categories`; `category` is the first genre. A ratings file named `ratings*.dat` is accepted when
`ratings.dat` is absent (e.g. a sample).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .BaseDatasets import DataError, LoadReport, RecData, make_rec_data

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # the official ml-1m files are ISO-8859-1


def _split_lines(path: Path, sep: str, n_fields: int, report: LoadReport, strict: bool) -> list[list[str]]:
    rows = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        report.lines += 1
        parts = line.split(sep)
        if len(parts) != n_fields:
            msg = f"{path.name}: expected {n_fields} fields separated by {sep!r}, got {len(parts)}"
            if strict:
                raise DataError(f"{path}: line {line_no}: {msg}")
            report.problem("malformed", line_no, msg)
            continue
        rows.append(parts)
    return rows


def _ratings_frame(rows: list[list[str]], report: LoadReport, strict: bool, path: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    num = df[["rating", "timestamp"]].apply(pd.to_numeric, errors="coerce")
    bad = num.isna().any(axis=1)
    if bad.any():
        if strict:
            raise DataError(f"{path}: {int(bad.sum())} ratings with non-numeric rating/timestamp")
        report.other["non-numeric rating/timestamp"] = int(bad.sum())
    df = df[~bad].copy()
    df["rating"] = num.loc[~bad, "rating"].astype(float)
    df["timestamp"] = num.loc[~bad, "timestamp"].astype("int64")
    dup = df.duplicated(["user", "item", "timestamp"])
    if dup.any():
        if strict:
            raise DataError(f"{path}: {int(dup.sum())} duplicate ratings")
        report.duplicates += int(dup.sum())
        df = df[~dup]
    report.kept = len(df)
    return df


def load_movielens(path: str, strict: bool = False) -> RecData:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"MovieLens folder not found: {root} (expected ml-100k, ml-1m or ml-20m files)")
    report = LoadReport(source=str(root))
    users = None
    if (root / "u.data").is_file():  # ml-100k
        rows = _split_lines(root / "u.data", "\t", 4, report, strict)
        df = _ratings_frame(rows, report, strict, root / "u.data")
        movies = []
        for parts in _split_lines(root / "u.item", "|", 24, LoadReport(), strict):
            genres = [g for g, flag in zip(ML100K_GENRES, parts[5:], strict=False) if flag == "1"]
            movies.append((parts[0], parts[1], genres))
        if (root / "u.user").is_file():
            u = _split_lines(root / "u.user", "|", 5, LoadReport(), strict)
            users = pd.DataFrame(u, columns=["user", "age", "gender", "occupation", "zip"]).set_index("user")
            users["age"] = users["age"].astype(int)
        name = "movielens:ml-100k"
    elif (root / "ratings.csv").is_file():  # ml-20m / ml-25m
        df = pd.read_csv(root / "ratings.csv", dtype={"userId": str, "movieId": str})
        df = df.rename(columns={"userId": "user", "movieId": "item"})
        report.lines = report.kept = len(df)
        mv = pd.read_csv(root / "movies.csv", dtype={"movieId": str})
        movies = [(m, t, g.split("|") if g != "(no genres listed)" else [])
                  for m, t, g in zip(mv["movieId"], mv["title"], mv["genres"], strict=False)]
        name = f"movielens:{root.name}"
    else:  # ml-1m
        cands = [root / "ratings.dat"] if (root / "ratings.dat").is_file() else sorted(root.glob("ratings*.dat"))
        if not cands:
            raise DataError(f"{root}: no u.data, ratings.csv or ratings*.dat — is this a MovieLens folder?")
        rows = _split_lines(cands[0], "::", 4, report, strict)
        df = _ratings_frame(rows, report, strict, cands[0])
        movies = []
        if (root / "movies.dat").is_file():
            for parts in _split_lines(root / "movies.dat", "::", 3, LoadReport(), strict):
                movies.append((parts[0], parts[1], parts[2].split("|") if parts[2] else []))
        if (root / "users.dat").is_file():
            u = _split_lines(root / "users.dat", "::", 5, LoadReport(), strict)
            users = pd.DataFrame(u, columns=["user", "gender", "age", "occupation", "zip"]).set_index("user")
            users["age"] = users["age"].astype(int)
            users["occupation"] = users["occupation"].astype(int)
        name = f"movielens:{root.name}"
    items = pd.DataFrame(movies, columns=["item", "title", "categories"]).set_index("item")
    items["category"] = [g[0] if g else "" for g in items["categories"]]
    return make_rec_data(
        name, df, items=items, users=users, report=report, sort_ids=True,
        item_universe=items.index, user_universe=None if users is None else users.index,
    )


__all__ = ["load_movielens"]
