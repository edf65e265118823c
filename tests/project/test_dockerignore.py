""".dockerignore sends the build exactly what the Dockerfile copies, and no local state (instance/ holds the
development secrets), matched as Docker matches it (docker-py's ``exclude_paths``, a port of moby's rules).

The check runs on a copy of the repository's tracked files plus the local state a developer's checkout
has (a virtualenv, instance/, node_modules/, the Compose secrets, caches), so it holds whatever this
checkout happens to contain.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from tests.support.environment import ROOT

# What a working checkout holds besides its tracked files; none of it may reach the image.
LOCAL_STATE = (
    "instance/dev.env", "instance/keyring.json", "instance/audit-signing-key.pem", "instance/portal.db",
    ".venv/bin/python", ".venv-lock/bin/pip-compile", "tests/oidc_provider/node_modules/oidc-provider/index.js",
    "node_modules/x/index.js", "secrets/keyring", "secrets/database_url_app", ".env", ".git/config",
    "portal/__pycache__/config.cpython-311.pyc", "audit/__pycache__/store.cpython-311.pyc", ".pytest_cache/v/x",
    "patient_portal.egg-info/PKG-INFO", "build/lib/portal/__init__.py", "dist/patient_portal-0.1.0.whl",
    "test-results/trace.zip", "docs/screenshots/01.png", "bench/results.json",
)


def _copy_sources(pattern: str) -> list[str]:
    """The sources of the Dockerfile's COPY lines that read the build context (not --from another stage)."""
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [word for word in line.split()[1:] if not word.startswith("--")]
            sources.extend(words[:-1])
    assert sources, "the Dockerfile copies nothing from the build context?"
    return [source for source in sources if re.fullmatch(pattern, source)]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The tracked files (symlinks as symlinks) and a developer's local state, in a scratch folder."""
    tree = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, target = ROOT / name, tree / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copyfile(source, target)
    if (ROOT / ".dockerignore").exists():
        shutil.copyfile(ROOT / ".dockerignore", tree / ".dockerignore")
    for name in LOCAL_STATE:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("local state\n")
    return tree


@pytest.fixture(scope="module")
def context(checkout) -> set[str]:
    """The paths Docker would send as the build context."""
    ignore = checkout / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return {path.replace(os.sep, "/") for path in exclude_paths(str(checkout), patterns)}


def test_every_file_the_dockerfile_copies_is_in_the_context(checkout, context):
    for source in _copy_sources(r".*"):
        path = checkout / source
        assert path.exists(), f"the Dockerfile copies {source}, which the repository does not have"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() or p.is_symlink()]
        wanted = {str(p.relative_to(checkout)) for p in files} - set(LOCAL_STATE)
        missing = sorted(wanted - context)
        assert not missing, f"COPY {source} would miss {missing[:10]}"


def test_the_build_needs_exactly_these_sources():
    """The list the brief for the image names; a new COPY line needs a look at .dockerignore too."""
    assert set(_copy_sources(r".*")) == {"requirements/pip.txt", "requirements/runtime.txt", "pyproject.toml",
                                        "README.md", "portal", "audit", "templates", "static", "run.py"}


def test_package_links_to_templates_and_static_reach_the_build(checkout, context):
    """portal/templates and portal/static are symlinks to the top-level folders, which must come along."""
    for link in ("portal/templates", "portal/static"):
        assert (checkout / link).is_symlink() and link in context
        target = (checkout / link).resolve().relative_to(checkout.resolve())
        assert any(path.startswith(f"{target}/") for path in context), f"{target}/ is not in the build context"


def test_no_local_state_reaches_the_build(context):
    leaked = sorted(path for path in context if path in LOCAL_STATE or path.startswith(tuple(
        f"{folder}/" for folder in ("instance", ".venv", ".venv-lock", "tests", "node_modules", "secrets", ".git", "docs",
                                    "bench", "build", "dist", ".pytest_cache", "test-results"))))
    assert not leaked, leaked
    assert not [path for path in context if "__pycache__" in path or path.endswith(".pyc") or ".egg-info" in path]
    assert ".env" not in context and "instance" not in context


def test_the_context_is_only_what_the_build_copies(context):
    """An allowlist: anything new at the top of the repository stays out until the Dockerfile needs it.
    (Docker always sends the Dockerfile and .dockerignore themselves; neither reaches the image.)"""
    allowed = set(_copy_sources(r".*")) | {"Dockerfile", ".dockerignore"}
    outside = sorted(path for path in context if not any(path == source or path.startswith(f"{source}/") or
                                                         source.startswith(f"{path}/") for source in allowed))
    assert not outside, outside
