"""MovieLens loader: ml-100k (`u.data`, `u.item`, `u.user`), ml-1m (`ratings.dat`, `movies.dat`,
`users.dat`, `::`-separated, ISO-8859-1 or UTF-8) and ml-20m / ml-25m (`ratings.csv`, `movies.csv`).

Every movie in the movie file and every user in the user file joins the catalogue, even without a
rating (so a sampled ratings file still sees the whole catalogue). Genres are split into
`categories`; `category` is the first genre. A ratings file named `ratings*.dat` is accepted when
`ratings.dat` is absent (e.g. a sample).

A rating line with the wrong number of fields, a missing or non-numeric rating/timestamp, a negative
timestamp or an exact duplicate is counted in the LoadReport and skipped; `strict=True` raises
`DataError` with the line number instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .BaseDatasets import DataError, LoadReport, RecData, make_rec_data

RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # the official ml-1m files are ISO-8859-1


def _split_lines(path: Path, sep: str, n_fields: int, report: LoadReport, strict: bool,
                 line_nos: list[int] | None = None) -> list[list[str]]:
    """Rows of `n_fields` fields; other lines counted as malformed (their numbers go to `line_nos`)."""
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
        if line_nos is not None:
            line_nos.append(line_no)
    return rows


def _ratings_frame(df: pd.DataFrame, report: LoadReport, strict: bool, path: Path,
                   line_nos: list[int] | None = None) -> pd.DataFrame:
    """Columns user, item, rating, timestamp (text or numbers) -> clean ratings.

    A rating or timestamp that is missing or not a number, and a negative timestamp, are counted and
    skipped (strict: DataError with the line number); exact duplicates (user, item, timestamp) too.
    """
    lines = np.asarray(line_nos) if line_nos is not None else np.arange(len(df)) + 2  # csv: header
    num = df[["rating", "timestamp"]].apply(pd.to_numeric, errors="coerce")
    checks = [("non-numeric rating/timestamp", ~np.isfinite(num.to_numpy(dtype=float)).all(axis=1)),
              ("negative timestamp", (num["timestamp"] < 0).to_numpy())]
    drop = np.zeros(len(df), dtype=bool)
    for kind, bad in checks:
        bad = bad & ~drop
        if bad.any():
            first = int(lines[np.argmax(bad)])
            if strict:
                raise DataError(f"{path}: line {first}: {kind} ({int(bad.sum())} line(s) like it)")
            report.other[kind] = report.other.get(kind, 0) + int(bad.sum())
            if len(report.examples) < 5:
                report.examples.append(f"line {first}: {path.name}: {kind}")
            drop |= bad
    df = df[~drop].copy()
    df["rating"] = num.loc[~drop, "rating"].astype(float)
    df["timestamp"] = num.loc[~drop, "timestamp"].astype("int64")
    dup = df.duplicated(["user", "item", "timestamp"])
    if dup.any():
        if strict:
            first = int(lines[~drop][np.argmax(dup.to_numpy())])
            raise DataError(f"{path}: line {first}: duplicate rating ({int(dup.sum())} duplicates)")
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
        nos: list[int] = []
        rows = _split_lines(root / "u.data", "\t", 4, report, strict, nos)
        df = _ratings_frame(pd.DataFrame(rows, columns=RATING_COLUMNS), report, strict, root / "u.data", nos)
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
        try:
            df = pd.read_csv(root / "ratings.csv", dtype={"userId": str, "movieId": str})
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataError(f"{root / 'ratings.csv'}: not a MovieLens ratings.csv ({e})") from None
        missing = [c for c in ("userId", "movieId", "rating", "timestamp") if c not in df]
        if missing:
            raise DataError(f"{root / 'ratings.csv'}: missing columns {', '.join(missing)}; expected "
                            f"the header userId,movieId,rating,timestamp")
        df = df.rename(columns={"userId": "user", "movieId": "item"})
        report.lines = len(df)
        df = _ratings_frame(df[RATING_COLUMNS], report, strict, root / "ratings.csv")
        mv = pd.read_csv(root / "movies.csv", dtype={"movieId": str})
        movies = [(m, t, g.split("|") if g != "(no genres listed)" else [])
                  for m, t, g in zip(mv["movieId"], mv["title"], mv["genres"], strict=False)]
        name = f"movielens:{root.name}"
    else:  # ml-1m
        cands = [root / "ratings.dat"] if (root / "ratings.dat").is_file() else sorted(root.glob("ratings*.dat"))
        if not cands:
            raise DataError(f"{root}: no u.data, ratings.csv or ratings*.dat — is this a MovieLens folder?")
        nos = []
        rows = _split_lines(cands[0], "::", 4, report, strict, nos)
        df = _ratings_frame(pd.DataFrame(rows, columns=RATING_COLUMNS), report, strict, cands[0], nos)
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
