"""Settings every test gets."""

import signal

import pytest


def pytest_configure(config):
    """Ctrl-C as an interactive run has it. A shell starts a background job (`cmd &` in a script,
    nohup) with SIGINT ignored, Python then keeps it ignored, and so would every `cnnc` a test
    starts: the tests of Ctrl-C handling would see nothing arrive. The child processes inherit
    the default action from this handler (a handler is reset to the default across exec)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """No test reaches the internet: `mnist` and `fashion-mnist` are not downloaded when missing
    (tests/test_download.py turns this off against a local server)."""
    monkeypatch.setenv("CNNC_OFFLINE", "1")
    monkeypatch.delenv("CNNC_DATA_URL", raising=False)
