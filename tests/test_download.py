"""Datasets.download against a local HTTP server on 127.0.0.1 (never the internet)."""

import gzip
import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from Datasets import download as dl

FILES: dict[str, bytes] = {}
REQUESTS: list[tuple[str, str | None]] = []


class RangeHandler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        REQUESTS.append((self.path, self.headers.get("Range")))
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            chunk = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            chunk = body
            self.send_response(200)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_verifies_md5(server, tmp_path):
    FILES["/a.bin"] = b"x" * 100_000
    md5 = hashlib.md5(FILES["/a.bin"]).hexdigest()
    out = dl.download(f"{server}/a.bin", tmp_path / "a.bin", md5=md5, progress=False)
    assert out.read_bytes() == FILES["/a.bin"]
    with pytest.raises(dl.DownloadError, match="MD5"):
        dl.download(f"{server}/a.bin", tmp_path / "b.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "b.bin").exists() and (tmp_path / "b.bin.bad").exists()


def test_download_resumes_partial_file(server, tmp_path):
    body = bytes(range(256)) * 1000
    FILES["/big.bin"] = body
    (tmp_path / "big.bin.part").write_bytes(body[:70_000])
    REQUESTS.clear()
    out = dl.download(f"{server}/big.bin", tmp_path / "big.bin", md5=hashlib.md5(body).hexdigest(),
                      progress=False)
    assert out.read_bytes() == body
    assert REQUESTS == [("/big.bin", "bytes=70000-")]


def test_existing_file_is_not_overwritten(server, tmp_path):
    FILES["/c.bin"] = b"new"
    (tmp_path / "c.bin").write_bytes(b"mine")
    dl.download(f"{server}/c.bin", tmp_path / "c.bin", progress=False)
    assert (tmp_path / "c.bin").read_bytes() == b"mine"
    dl.download(f"{server}/c.bin", tmp_path / "c.bin", progress=False, overwrite=True)
    assert (tmp_path / "c.bin").read_bytes() == b"new"


def test_movielens_zip_with_published_md5(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::1::5::100\n1::2::4::200\n1::3::3::300\n")
        z.writestr("ml-1m/movies.dat", "1::A (1990)::Drama\n2::B (1991)::Comedy\n3::C (1992)::Drama\n")
    FILES["/ml-1m.zip"] = buf.getvalue()
    FILES["/ml-1m.zip.md5"] = (hashlib.md5(buf.getvalue()).hexdigest() + "  ml-1m.zip\n").encode()
    folder = dl.download_movielens("1m", tmp_path, base_url=server, progress=False)
    import Datasets
    d = Datasets.load(f"movielens:{folder}")
    assert d.n_items == 3 and len(d.interactions) == 3


def test_amazon_url_and_gzip_check(server, tmp_path):
    assert dl.amazon2018_url("All_Beauty", "5core").endswith("categoryFilesSmall/All_Beauty_5.json.gz")
    assert dl.amazon2018_url("All_Beauty", "meta").endswith("metaFiles2/meta_All_Beauty.json.gz")
    with pytest.raises(ValueError, match="unknown Amazon 2018 category"):
        dl.amazon2018_url("Beautyy")
    FILES["/categoryFilesSmall/X_5.json.gz"] = gzip.compress(b'{"asin": "a"}\n')
    p = dl.download_amazon2018("X", "5core", tmp_path, base_url=server, progress=False)
    assert p.name == "X_5.json.gz"
    FILES["/categoryFilesSmall/Y_5.json.gz"] = b"not gzip"
    with pytest.raises(dl.DownloadError, match="gzip"):
        dl.download_amazon2018("Y", "5core", tmp_path, base_url=server, progress=False)


def test_offline_gives_clear_message(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(dl.DownloadError, match="offline"):
        dl.download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", progress=False, timeout=2)
