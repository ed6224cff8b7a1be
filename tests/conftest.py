"""Settings every test gets."""

import pytest


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """No test reaches the internet: `mnist` and `fashion-mnist` are not downloaded when missing
    (tests/test_download.py turns this off against a local server)."""
    monkeypatch.setenv("CNNC_OFFLINE", "1")
    monkeypatch.delenv("CNNC_DATA_URL", raising=False)
