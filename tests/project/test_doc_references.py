"""Every test the documents name (README, SECURITY, docs/, deploy/, comments) exists under that name, so a
reader who follows a reference finds the proof it promises."""
from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path

from tests.support.environment import ROOT

FULL_REFERENCE = re.compile(r"(tests/[\w/]+\.py)((?:::\w+)*)")
BARE_REFERENCE = re.compile(r"(?<![/\w])(test_\w+\.py)::(\w+)")
DOCUMENTS = sorted(
    name for name in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if name.endswith((".md", ".py", ".yaml", ".toml", ".cfg", ".conf")) and not name.startswith("tests/vectors/")
    and name != "tests/project/test_doc_references.py"  # its own examples name tests that do not exist
)


@cache
def names_in(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef)))


def broken_references(text: str) -> list[str]:
    broken = []
    for match in FULL_REFERENCE.finditer(text):
        path = ROOT / match.group(1)
        if not path.is_file():
            broken.append(match.group(0))
        elif any(name not in names_in(path) for name in match.group(2).split("::")[1:]):
            broken.append(match.group(0))
    for match in BARE_REFERENCE.finditer(text):
        module, name = match.groups()
        if not any(name in names_in(path) for path in (ROOT / "tests").rglob(module)):
            broken.append(match.group(0))
    return broken


def test_every_test_a_document_names_exists():
    broken = {document: found for document in DOCUMENTS
              if (found := broken_references((ROOT / document).read_text(errors="replace")))}
    assert broken == {}


def test_a_renamed_test_is_a_broken_reference():
    assert broken_references("see tests/project/test_doc_references.py::test_that_was_renamed") == [
        "tests/project/test_doc_references.py::test_that_was_renamed"]
    assert broken_references("see test_doc_references.py::test_every_test_a_document_names_exists") == []
