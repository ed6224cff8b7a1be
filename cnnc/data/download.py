"""Download `mnist` and `fashion-mnist` on first use, as Keras' load_data() does.

When neither data set is found on this machine (see `cnnc.data.idx` for where it is looked
for), its four IDX files are fetched into the user cache folder (``~/.cache/cnnc/<name>/``),
each checked against its published SHA-256 before it is kept: a file that fails the check is
deleted and the next mirror tried. A download goes to a temporary file renamed into place
once verified, so an interrupted one leaves nothing behind that looks complete.

``$CNNC_DATA_URL`` replaces the mirrors with one base URL (a local mirror, or a test server):
the files are then fetched from ``$CNNC_DATA_URL/<name>/<file>``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cnnc.diagnostics import CnncError

URL_ENV = "CNNC_DATA_URL"
TIMEOUT = 30  # seconds without a byte before a mirror counts as unreachable
CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from and what they must hash to."""

    mirrors: tuple[str, ...]  # base URLs, tried in order; a file is base + its name
    sha256: dict  # file name -> hex digest


# The files and digests are the ones the data sets' authors publish (Fashion-MNIST's README
# gives them; MNIST's are those of the files on Yann LeCun's page, which PyTorch and TensorFlow
# mirror). The first mirror of each is the authors' own.
SOURCES = {
    "fashion-mnist": Source(
        mirrors=(("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                 "data/fashion/"),
                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        sha256={
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },),
    "mnist": Source(
        mirrors=("http://yann.lecun.com/exdb/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        sha256={
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },),
}


def downloadable(name: str) -> bool:
    return name in SOURCES


def mirrors(name: str) -> list[str]:
    """The base URLs to try for data set `name`, in order ($CNNC_DATA_URL alone when set)."""
    base = os.environ.get(URL_ENV, "").strip()
    if base:
        return [base.rstrip("/") + f"/{name}/"]
    return list(SOURCES[name].mirrors)


def download(name: str, folder: Path, *, stream=None) -> Path:
    """Fetch the four files of data set `name` into `folder` (kept files already there and
    whole are not fetched again). Returns `folder`. Raises CnncError(code="data") when a file
    cannot be had intact from any mirror; nothing unverified is left in `folder`."""
    source = SOURCES[name]
    stream = stream if stream is not None else sys.stderr
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnncError(f"cannot create the cache folder {folder}: {e.strerror or e}",
                        hint="set $XDG_CACHE_HOME to a writable folder, or download the files "
                             "yourself and pass --data DIR", code="io") from e
    bases = mirrors(name)
    for file, digest in source.sha256.items():
        target = folder / file
        if target.is_file() and _sha256(target) == digest:
            continue
        failures = []
        for base in bases:
            url = base + file
            problem = _fetch(url, target, digest, stream)
            if problem is None:
                break
            failures.append(f"{url}: {problem}")
        else:
            corrupt = all("SHA-256" in f for f in failures)
            raise CnncError(
                f"could not download the data set '{name}': "
                + ("every copy of " + file + " failed its SHA-256 check" if corrupt
                   else f"no mirror of {file} could be reached"),
                notes=failures,
                hint=(f"check the connection (cnnc downloads {name} once, into {folder}); "
                      f"or put the four files there yourself, or pass --data DIR"
                      + (f"; ${URL_ENV} is set to {os.environ[URL_ENV]}"
                         if os.environ.get(URL_ENV) else "")),
                code="data")
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, target: Path, digest: str, stream) -> str | None:
    """Download `url` to `target` if its SHA-256 is `digest`. None on success, else why not."""
    request = urllib.request.Request(url, headers={"User-Agent": "cnnc"})
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    bar = _Bar(stream, target.name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    total = response.headers.get("Content-Length")
                    total = int(total) if total and total.isdigit() else None
                    done = 0
                    bar.update(0, total)
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        done += len(block)
                        bar.update(done, total)
            except urllib.error.HTTPError as e:
                return f"HTTP {e.code} {e.reason}"
            except urllib.error.URLError as e:
                return f"unreachable ({getattr(e, 'reason', e)})"
            except (OSError, ValueError) as e:  # timeouts, resets, a malformed URL
                return f"failed ({e})"
        found = h.hexdigest()
        if found != digest:
            return f"its SHA-256 is {found}, not the published {digest}; not kept"
        os.replace(tmp, target)
        tmp = None
        bar.finish(done)
        return None
    finally:
        bar.close()
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


class _Bar:
    """A one-line progress bar on a terminal; elsewhere, one line when a file is done."""

    WIDTH = 30

    def __init__(self, stream, label: str):
        self.stream = stream
        self.label = label
        self.live = hasattr(stream, "isatty") and stream.isatty() \
            and os.environ.get("TERM") != "dumb"
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, total: int | None) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done != total:
            return
        self.last = now
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // max(total, 1))
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"downloading {self.label} [{bar}] {_mb(done)}/{_mb(total)}"
        else:
            text = f"downloading {self.label} {_mb(done)}"
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def finish(self, done: int) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"downloaded {self.label} ({_mb(done)}, SHA-256 verified)\n")
        self.stream.flush()
        self.drawn = False

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
