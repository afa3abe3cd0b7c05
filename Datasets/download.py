"""Download public data sets from their official URLs: progress bar, checksum, resume.

    python -m Datasets.download movielens --size 1m              # -> Data/movielens/ml-1m/
    python -m Datasets.download amazon2018 --category All_Beauty --kind 5core
    python -m Datasets.download amazon2018 --category Luxury_Beauty --kind meta

- **Resume**: bytes go to `<file>.part`; a rerun asks the server for the rest (HTTP Range) and appends.
- **Checksum**: GroupLens publishes an MD5 per MovieLens zip (`<zip>.md5`), which is fetched and
  checked. The Amazon 2018 pages publish no checksums, so those files are checked for gzip integrity.
  A file that fails its check is kept as `<file>.bad` for inspection, never as the final name.
- **Offline**: a clear error says the host could not be reached and the exact path to put the file at
  by hand; a rerun then uses that file (a MovieLens zip placed by hand is checked by its CRCs when the
  published MD5 cannot be fetched).
- An existing complete file is never overwritten unless `overwrite=True`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

DATA_DIR = Path(__file__).resolve().parent.parent / "Data"

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
MOVIELENS_SIZES = {"100k": "ml-100k", "1m": "ml-1m", "20m": "ml-20m", "25m": "ml-25m"}

AMAZON_BASE = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
AMAZON_KINDS = {
    "reviews": "{base}/categoryFiles/{cat}.json.gz",
    "5core": "{base}/categoryFilesSmall/{cat}_5.json.gz",
    "meta": "{base}/metaFiles2/meta_{cat}.json.gz",
}
AMAZON_CATEGORIES = [
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions",
    "Movies_and_TV", "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies",
    "Prime_Pantry", "Software", "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games",
    "Video_Games",
]


class DownloadError(RuntimeError):
    pass


class OfflineError(DownloadError):
    """The server could not be reached; the message names where to put a hand-downloaded file."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(url: str, start: int = 0, timeout: float = 30.0, dest: Path | None = None):
    """The server's response for url (from byte `start`); offline, a DownloadError that names the exact
    path to place a hand-downloaded file at (`dest`)."""
    req = urllib.request.Request(url, headers={"User-Agent": "notes-on-recsys-models"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # range not satisfiable: the .part is already complete
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise offline_error(url, e, dest) from e


def offline_error(url: str, err: BaseException, dest: Path | None) -> OfflineError:
    host = urllib.parse.urlsplit(url).netloc
    where = (f"by hand, place it at {Path(dest).resolve()} and run this command again"
             if dest is not None else "by hand")
    return OfflineError(f"cannot reach {host} ({getattr(err, 'reason', err)}). Are you offline? "
                         f"Download {url} {where}")


def download(url: str, dest: str | Path, md5: str | None = None, overwrite: bool = False,
             progress: bool = True, chunk: int = 1 << 16, timeout: float = 30.0) -> Path:
    """Download url to dest, resuming a `<dest>.part`, verifying `md5` when given."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        if md5 is None or md5sum(dest) == md5:
            return dest
        raise DownloadError(f"{dest} exists but its MD5 differs from {md5}; pass overwrite=True")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    resp = _open(url, start, timeout, dest)
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            if start and status != 206:  # server ignored the range: start over
                start = 0
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            mode = "ab" if start else "wb"
            bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                       disable=not progress) if tqdm else None
            with open(part, mode) as f:
                while block := resp.read(chunk):
                    f.write(block)
                    if bar:
                        bar.update(len(block))
            if bar:
                bar.close()
            if total is not None and part.stat().st_size != total:
                raise DownloadError(f"{url}: connection closed at {part.stat().st_size:,} of "
                                    f"{total:,} bytes; run again to resume")
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            bad = dest.with_name(dest.name + ".bad")
            os.replace(part, bad)
            raise DownloadError(f"{dest.name}: MD5 {got} != published {md5}; kept as {bad}")
    os.replace(part, dest)
    return dest


def fetch_text(url: str, timeout: float = 30.0) -> str:
    resp = _open(url, 0, timeout)
    with resp:
        return resp.read().decode("utf-8", errors="replace")


def check_gzip(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError) as e:
        raise DownloadError(f"{path} is not a complete gzip file ({e})") from e


def download_movielens(size: str = "1m", root: Path = DATA_DIR / "movielens", base_url: str | None = None,
                       **kw) -> Path:
    """Download + verify (published MD5) + unpack a MovieLens zip; returns the unpacked folder."""
    if size not in MOVIELENS_SIZES:
        raise ValueError(f"size must be one of {list(MOVIELENS_SIZES)}, got {size!r}")
    name = MOVIELENS_SIZES[size]
    url = (base_url.rstrip("/") + f"/{name}.zip") if base_url else MOVIELENS_URL.format(name=name)
    zip_dest = Path(root) / f"{name}.zip"
    try:
        md5 = fetch_text(url + ".md5", timeout=kw.get("timeout", 30.0)).split()[0].strip()
    except OfflineError as e:
        if not zip_dest.is_file() or kw.get("overwrite"):
            raise offline_error(url, e.__cause__ or e, zip_dest) from e.__cause__
        # offline, with the zip placed by hand: use it; unpacking checks its CRCs
        print(f"note: could not fetch {url}.md5 ({e.__cause__}); using {zip_dest} without the MD5 check")
        md5 = None
    except DownloadError as e:
        if "HTTP 404" not in str(e):
            raise
        md5 = None
    zpath = download(url, zip_dest, md5=md5, **kw)
    try:
        with zipfile.ZipFile(zpath) as z:
            bad = z.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"CRC error in {bad}")
            z.extractall(root)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{zpath} is not a complete zip file ({e}); delete it and run again") from e
    return Path(root) / name


def amazon2018_url(category: str, kind: str = "5core", base_url: str | None = None) -> str:
    if kind not in AMAZON_KINDS:
        raise ValueError(f"kind must be one of {list(AMAZON_KINDS)}, got {kind!r}")
    if base_url is None and category not in AMAZON_CATEGORIES:
        raise ValueError(f"unknown Amazon 2018 category {category!r}; known: {', '.join(AMAZON_CATEGORIES)}")
    return AMAZON_KINDS[kind].format(base=(base_url or AMAZON_BASE).rstrip("/"), cat=category)


def download_amazon2018(category: str, kind: str = "5core", root: Path = DATA_DIR / "amazon2018",
                        base_url: str | None = None, **kw) -> Path:
    url = amazon2018_url(category, kind, base_url)
    path = download(url, Path(root) / url.rsplit("/", 1)[1], **kw)
    check_gzip(path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="source", required=True)
    ml = sub.add_parser("movielens")
    ml.add_argument("--size", default="1m", choices=list(MOVIELENS_SIZES))
    az = sub.add_parser("amazon2018")
    az.add_argument("--category", required=True, help="e.g. All_Beauty, Luxury_Beauty, Video_Games")
    az.add_argument("--kind", default="5core", choices=list(AMAZON_KINDS))
    for s in (ml, az):
        s.add_argument("--root", default=None)
        s.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.source == "movielens":
            out = download_movielens(a.size, Path(a.root or DATA_DIR / "movielens"), overwrite=a.overwrite)
        else:
            out = download_amazon2018(a.category, a.kind, Path(a.root or DATA_DIR / "amazon2018"),
                                      overwrite=a.overwrite)
    except (DownloadError, ValueError, OSError) as e:
        print(f"error: download failed: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"ready: {out}")


if __name__ == "__main__":
    main()
