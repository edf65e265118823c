"""The code base stays lint-clean (ruff, configured in pyproject.toml), so CI catches slips early."""
import shutil
import subprocess

import pytest

from tests.support.environment import ROOT


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is installed by `make test` (test extra)")
    result = subprocess.run([ruff, "check", "portal", "audit", "tests", "bench", "run.py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
