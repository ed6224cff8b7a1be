"""`mnist` and `fashion-mnist` are downloaded on first use, verified by SHA-256, against a local
HTTP server on 127.0.0.1 (nothing here reaches the internet); and a data set that does not fit
the model gets a hint naming those that do."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from cnnc.data import check_fits, download, fit, idx, load_dataset
from cnnc.diagnostics import CnncError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_gz(array: np.ndarray) -> bytes:
    magic = 0x800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def tiny_mnist(n_train=40, n_test=10, size=(6, 5)) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        FILES[0]: idx_gz(rng.integers(0, 256, (n_train, *size))),
        FILES[1]: idx_gz(np.arange(n_train) % 10),
        FILES[2]: idx_gz(rng.integers(0, 256, (n_test, *size))),
        FILES[3]: idx_gz(np.arange(n_test) % 10),
    }


class Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server with a tiny `mnist` whose digests replace the published ones; downloads on,
    into a fresh cache folder."""
    files = tiny_mnist()
    root = tmp_path / "www"
    (root / "mnist").mkdir(parents=True)
    for name, data in files.items():
        (root / "mnist" / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    monkeypatch.setitem(download.SOURCES, "mnist",
                        download.Source(mirrors=("http://127.0.0.1:9/never-used/",),
                                        sha256=digests))
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {})
    monkeypatch.delenv("CNNC_OFFLINE", raising=False)
    monkeypatch.delenv("CNNC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = Server(root)
    monkeypatch.setenv(download.URL_ENV, server.url)
    yield server, tmp_path / "cache" / "cnnc" / "mnist"
    server.close()


def test_downloaded_on_first_use_then_read_from_the_cache(served, capsys):
    server, cache = served
    ds = load_dataset("mnist")
    assert ds.train_x.shape == (40, 6, 5, 1) and ds.test_x.shape == (10, 6, 5, 1)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no temporary files left
    assert sorted(server.requests) == sorted(f"/mnist/{f}" for f in FILES)
    err = capsys.readouterr().err
    assert err.count("SHA-256 verified") == 4
    load_dataset("mnist")
    assert len(server.requests) == 4  # the second time, nothing is fetched


def test_corrupted_file_fails_its_checksum_and_is_not_kept(served):
    server, cache = served
    bad = server.root / "mnist" / FILES[2]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CnncError) as info:
        load_dataset("mnist")
    err = info.value
    assert err.code == "data"
    assert "was not found on this machine and could not be downloaded" in err.message
    assert any("failed its SHA-256 check" in n for n in err.notes)
    assert any(f"/mnist/{FILES[2]}: its SHA-256 is " in n and "not kept" in n
               for n in err.notes)
    kept = sorted(p.name for p in cache.iterdir())
    assert FILES[2] not in kept and not [k for k in kept if k.endswith(".part")]
    # the two files before it were verified and kept; a repaired server completes the set
    assert kept == sorted(FILES[:2])
    bad.write_bytes(tiny_mnist()[FILES[2]])
    assert load_dataset("mnist").test_x.shape == (10, 6, 5, 1)


def test_missing_file_on_the_server(served):
    server, cache = served
    (server.root / "mnist" / FILES[3]).unlink()
    with pytest.raises(CnncError) as info:
        load_dataset("mnist")
    assert any("HTTP 404" in n for n in info.value.notes)
    assert FILES[3] not in {p.name for p in cache.iterdir()}


def test_offline_is_a_clear_error(served, monkeypatch):
    server, _ = served
    server.close()  # nothing listens there any more
    with pytest.raises(CnncError) as info:
        load_dataset("mnist")
    err = info.value
    assert "could not be downloaded" in err.message
    assert any("unreachable" in n for n in err.notes)
    assert "check the connection" in err.hint and download.URL_ENV in err.hint
    monkeypatch.setenv("CNNC_OFFLINE", "1")
    with pytest.raises(CnncError) as info:
        load_dataset("mnist")
    assert "$CNNC_OFFLINE is set, so it was not downloaded" in info.value.notes


def test_train_command_downloads_and_trains(served, tmp_path, capsys):
    from cnnc.cli import main

    model = tmp_path / "m.cnn"
    model.write_text("input 6x5x1\nflatten\ndense 10 softmax\n")
    with pytest.raises(SystemExit) as info:
        main(["train", str(model), "--data", "mnist", "--epochs", "1", "--batch-size", "8"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    assert "downloaded train-images-idx3-ubyte.gz" in out.err


def test_published_digests_and_mirrors():
    for name, source in download.SOURCES.items():
        assert sorted(source.sha256) == sorted(FILES), name
        assert all(len(d) == 64 and int(d, 16) >= 0 for d in source.sha256.values())
        assert all(m.endswith("/") for m in source.mirrors)


# ---------------------------------------------------------------------------------------------
# The hint when the data does not fit


def test_hint_names_the_data_sets_that_fit_and_which_are_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {})
    monkeypatch.delenv("CNNC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "cnnc" / "mnist"
    folder.mkdir(parents=True)
    for name, data in tiny_mnist().items():
        (folder / name).write_bytes(data)
    digits = load_dataset("digits")
    with pytest.raises(CnncError) as info:
        check_fits(digits, (28, 28, 1), 10)
    assert info.value.hint == (
        "the data sets with 28x28x1 images are `mnist` (installed) and `fashion-mnist` "
        "(downloaded on first use): train with `--data mnist`, or write `data mnist` in the "
        "model's `train:` section")
    with pytest.raises(CnncError) as info:  # a flat input of 784 values fits them too
        check_fits(digits, (784,), 10)
    assert "`mnist` (installed)" in info.value.hint
    assert fit.fitting((8, 8, 1), 10) == [("digits", "built in")]
    assert fit.fitting((28, 28, 1), 5) == []  # 5 classes: none of them
    with pytest.raises(CnncError) as info:  # nothing known fits: the synthetic data set
        check_fits(digits, (32, 32, 3), 10)
    assert "shapes:32x32x3" in info.value.hint
