"""The code stays ruff clean (the same check developers run)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    folders = ["src", "tests", "bench", "cookbook", "integrations"]
    done = subprocess.run([ruff, "check", *folders], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
