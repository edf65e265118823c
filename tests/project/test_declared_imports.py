"""Every third-party module the code imports comes from a distribution pyproject.toml declares.

A package that arrives only as another package's requirement can disappear with that package's next
release, and its version floor is nobody's (joserfc was imported for months without being declared).
"""
import ast
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.environment import ROOT

FIRST_PARTY = {"portal", "audit", "tests", "bench", "run"}
# The code each part of the project runs, and the extras that install what it needs.
SCOPES = {"runtime": (("portal", "audit", "run.py"), ()), "tests and benchmarks": (("tests", "bench"), ("test", "postgres"))}


def imported_modules(paths: tuple[str, ...]) -> dict[str, str]:
    """Top-level names of the absolute imports under the given paths, each with one file importing it."""
    found: dict[str, str] = {}
    files = [path for name in paths for path in ([ROOT / name] if name.endswith(".py") else (ROOT / name).rglob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return found


def declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [text for extra in extras for text in project["optional-dependencies"][extra]]
    return {canonicalize_name(Requirement(text).name) for text in texts}


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_every_third_party_import_is_declared(scope: str):
    paths, extras = SCOPES[scope]
    allowed = declared(extras)
    providers = metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(imported_modules(paths).items()):
        if module in FIRST_PARTY or module in sys.stdlib_module_names or module == "__future__":
            continue
        distributions = {canonicalize_name(name) for name in providers.get(module, [])}
        if not distributions & allowed:
            undeclared.append(f"{module} (imported in {where}) comes from {sorted(distributions) or 'no installed distribution'}")
    assert not undeclared, "declare these in pyproject.toml and run `make lock`:\n" + "\n".join(undeclared)
