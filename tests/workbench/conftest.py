"""Fixtures shared by the workbench tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own (KQLWATCH_CACHE_DIR: translations and typed copies of data files)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("KQLWATCH_CACHE_DIR", str(folder))
    return folder
