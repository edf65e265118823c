"""pyproject.toml and the hashed locks in requirements/ agree, without the network.

Every requirement (those of the extras each lock is made for, and the build backend's) is locked at a
version it admits; nothing is locked that nothing requires; every locked line carries hashes and
names no other index. What each locked release requires is read from its installed metadata, so the
environment the tests run in must be the test lock's (`make test` installs it first).
"""
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.support.environment import ROOT

RUNTIME_LOCK = "requirements/runtime.txt"
TEST_LOCK = "requirements/test.txt"
# The extras each lock is made for: the runtime lock serves `make run` and the image, the test lock `make test`.
LOCK_EXTRAS = {RUNTIME_LOCK: {"postgres"}, TEST_LOCK: {"postgres", "test"}}
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Locked:
    version: Version
    hashes: tuple[str, ...]
    marker: Marker | None


def read_lock(path: Path) -> dict[NormalizedName, Locked]:
    """The pinned releases of a pip-compile lock, refusing anything but `name==version` with hashes."""
    entries: dict[NormalizedName, Locked] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: {line!r} (a lock names no index, find-links or other file)"
        requirement_text, *options = re.split(r"\s+(?=--)", line)
        requirement = Requirement(requirement_text)
        (pin,) = requirement.specifier
        assert pin.operator == "==" and "*" not in pin.version, f"{path.name}: {requirement_text} is not an exact pin"
        assert options and all(HASH.fullmatch(option) for option in options), f"{path.name}: {requirement_text} lacks hashes"
        entries[canonicalize_name(requirement.name)] = Locked(Version(pin.version), tuple(options), requirement.marker)
    return entries


def header(path: Path) -> str:
    """The comment block pip-compile writes above the pins (its Python version and command line)."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])


def compiled_extras(path: Path) -> set[str]:
    """The extras named on the pip-compile command line recorded in the lock's header."""
    return set(re.findall(r"--extra[= ](\S+)", header(path)))


def applies(requirement: Requirement, extras: set[str]) -> bool:
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""})


def roots(pyproject: dict, extras: set[str]) -> list[Requirement]:
    """What the project itself asks for: its dependencies, those of the given extras, and its build backend."""
    project = pyproject["project"]
    texts = project["dependencies"] + [text for extra in sorted(extras) for text in project["optional-dependencies"][extra]]
    texts += pyproject["build-system"]["requires"]
    return [requirement for requirement in map(Requirement, texts) if applies(requirement, set())]


def check_against_lock(requirements: list[Requirement], locked: dict[NormalizedName, Locked]) -> list[str]:
    """Walks from the given requirements through each locked release's own requirements; returns the problems."""
    problems: list[str] = []
    wanted_extras: dict[NormalizedName, set[str]] = {}
    queue = list(requirements)
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        entry = locked.get(name)
        if entry is None:
            problems.append(f"{requirement} is required but not locked")
            continue
        if not requirement.specifier.contains(entry.version, prereleases=True):
            problems.append(f"{name}=={entry.version} is locked but {requirement} is required")
            wanted_extras.setdefault(name, set())
            continue
        seen = wanted_extras.get(name)
        new = set(requirement.extras) - (seen or set())
        if seen is not None and not new:
            continue
        extras = wanted_extras.setdefault(name, set())
        extras.update(new)
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is locked but not installed here: run `make install-test`")
            continue
        if Version(installed.version) != entry.version:
            problems.append(f"{name} {installed.version} is installed but {entry.version} locked: run `make install-test`")
            continue
        queue += [dependency for dependency in map(Requirement, installed.requires or []) if applies(dependency, extras)]
    needed_here = {name for name, entry in locked.items() if entry.marker is None or entry.marker.evaluate()}
    problems += [f"{name} is locked but nothing requires it" for name in sorted(needed_here - wanted_extras.keys())]
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_lock_is_made_for_its_extras(lock: str):
    assert compiled_extras(ROOT / lock) == LOCK_EXTRAS[lock]


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_lock_holds_exactly_what_pyproject_requires(pyproject: dict, lock: str):
    problems = check_against_lock(roots(pyproject, LOCK_EXTRAS[lock]), read_lock(ROOT / lock))
    assert not problems, "pyproject.toml and " + lock + " disagree (run `make lock`):\n" + "\n".join(problems)


def test_runtime_lock_is_the_test_lock_without_the_test_extra():
    runtime, test = read_lock(ROOT / RUNTIME_LOCK), read_lock(ROOT / TEST_LOCK)
    differing = {name: (entry.version, test.get(name)) for name, entry in runtime.items()
                 if name not in test or test[name].version != entry.version}
    assert not differing, f"the image and `make run` would run other releases than the tests: {differing}"


def test_installs_come_from_the_locks_with_hashes_and_the_project_without_dependencies():
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"RUNTIME_LOCK := {RUNTIME_LOCK}" in makefile and f"TEST_LOCK := {TEST_LOCK}" in makefile
    for target, lock in (("install", "$(RUNTIME_LOCK)"), ("install-test", "$(TEST_LOCK)")):
        recipe = re.search(rf"^{target}: .*\n((?:\t.*\n)+)", makefile, re.MULTILINE)[1]
        assert f"--require-hashes -r {lock}" in recipe and "--no-deps" in recipe, recipe
    assert f" {RUNTIME_LOCK} " in dockerfile and "--require-hashes -r /tmp/runtime.txt" in dockerfile
    assert "--no-deps --no-build-isolation" in dockerfile
    pip_version = re.search(r"^PIP_VERSION := (\S+)$", makefile, re.MULTILINE)[1]
    assert f"pip=={pip_version} \\" in (ROOT / "requirements/pip.txt").read_text()
    assert "--require-hashes -r /tmp/pip.txt" in dockerfile and "--require-hashes -r requirements/pip.txt" in makefile, \
        "the image and `make install` should install the same pip, by hash"
    image_python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.MULTILINE)[1]
    for lock in LOCK_EXTRAS:
        assert f"pip-compile with Python {image_python}\n" in header(ROOT / lock), f"{lock}: not the image's Python"
