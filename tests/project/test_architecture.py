"""The shape the code keeps: imports at module top and no cycles, services free of HTTP, every action registered,
tests sharing code only through tests/support."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from portal.actions import Action
from tests.support.environment import ROOT

PACKAGES = ("portal", "audit")
ACTION_CALLS = {"authorize", "authorized", "record", "record_each", "can", "_authorized", "_checked"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imported_modules(name: str, path: Path, known: dict[str, Path] = MODULES) -> set[str]:
    """The portal/audit modules ``name`` imports, anywhere in it: a package's own submodules too, so a package
    that imports its views while they import its blueprint back is a cycle like any other."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_portal_and_audit_modules():
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    assert cycles(graph) == []


AUDIT_TABLES = {"audit_entry", "audit_tree_node", "audit_tree_checkpoint", "audit_tree_cosignature", "metadata"}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("portal")))
def test_the_portal_reads_the_audit_log_through_the_store_never_its_tables_or_private_names(name):
    """Schema and migrations aside (portal/migrations is not scanned), the portal asks the audit store."""
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "audit":
            touched = {alias.name for alias in node.names if alias.name.startswith("_") or alias.name in AUDIT_TABLES}
            assert not touched, f"{name}:{node.lineno} imports {sorted(touched)} from {node.module}"


def test_the_audit_package_never_imports_the_portal_or_flask():
    for name, path in MODULES.items():
        if name.startswith("audit"):
            imports = {alias.name for node in ast.walk(ast.parse(path.read_text()))
                       if isinstance(node, ast.Import) for alias in node.names}
            imports |= {node.module or "" for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
            assert not {i for i in imports if i.split(".")[0] in {"portal", "flask", "flask_socketio"}}, name


TEST_MODULES = sorted(path for path in (ROOT / "tests").rglob("*.py") if "support" not in path.parts)


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_tests_share_code_only_through_tests_support(path):
    """A test module imports helpers from tests/support, never from conftest.py or from another test module."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        for name in names:
            assert not name.startswith("tests") or name.startswith("tests.support"), \
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"


def imports_inside_functions(path: Path) -> list[str]:
    """``function (line N)`` for each function body that imports something."""
    tree = ast.parse(path.read_text())
    found = []
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        nested = [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
        if nested:
            found.append(f"{function.name} (line {nested[0].lineno})")
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_are_at_the_top_of_the_module(name):
    nested = imports_inside_functions(MODULES[name])
    assert not nested, f"{name} imports inside {', '.join(nested)}"


@pytest.mark.parametrize("path", sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py"), ROOT / "run.py"]),
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_tests_and_benchmarks_import_at_the_top_of_the_module_too(path):
    nested = imports_inside_functions(path)
    assert not nested, f"{path.relative_to(ROOT)} imports inside {', '.join(nested)}"


def is_type_checking_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def late_imports(tree: ast.Module) -> list[int]:
    """Lines of module-level imports that come after other statements (what E402 flags), wherever a
    ``noqa`` hides them: the module docstring, ``from __future__`` and ``if TYPE_CHECKING:`` may precede."""
    late, code_seen = [], False
    for index, node in enumerate(tree.body):
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if is_type_checking_block(node):
            continue
        imports = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))] \
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)) else []
        if imports and code_seen:
            late.extend(n.lineno for n in imports)
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            code_seen = True
    return late


def test_an_import_inside_a_function_is_found(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("import os\n\n\ndef late():\n    import json\n    return json\n")
    assert imports_inside_functions(module) == ["late (line 5)"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_level_imports_come_before_any_other_statement(name):
    late = late_imports(ast.parse(MODULES[name].read_text()))
    assert not late, f"{name} imports after other statements (line {late[0]})"


def test_late_imports_are_found_and_type_checking_blocks_are_not():
    source = '''"""Doc."""
from __future__ import annotations
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from portal.models import User
bp = object()
from portal import views
'''
    assert late_imports(ast.parse(source)) == [7]


def test_a_package_importing_its_views_which_import_it_back_is_a_cycle(tmp_path):
    package = tmp_path / "portal" / "feature"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from portal.feature import views\n")
    (package / "views.py").write_text("from portal.feature import bp\n")
    names = {"portal.feature": package / "__init__.py", "portal.feature.views": package / "views.py"}
    graph = {name: imported_modules(name, path, names) for name, path in names.items()}
    assert cycles(graph) == [["portal.feature", "portal.feature.views"]]


LONG_MODULE_LINES = 400


ALL_PYTHON = sorted(path for path in [*MODULES.values(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py"),
                                     ROOT / "run.py"] if "node_modules" not in path.parts)


@pytest.mark.parametrize("path", ALL_PYTHON, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_long_module_says_why_it_is_long(path):
    """Past about 400 lines a module (code, test, benchmark) should split along its topics, unless its
    docstring says why not."""
    source = path.read_text()
    if source.count("\n") > LONG_MODULE_LINES:
        docstring = ast.get_docstring(ast.parse(source)) or ""
        assert "long because" in " ".join(docstring.lower().split()), \
            f"{path.relative_to(ROOT)} has {source.count(chr(10))} lines and no 'long because ...' in its docstring"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.endswith(".service") or ".service" in n))
def test_services_speak_the_domain_not_http(name):
    source = MODULES[name].read_text()
    for http_thing in ("ApiError", "abort(", "jsonify", "make_response", "werkzeug.exceptions"):
        assert http_thing not in source, f"{name} uses {http_thing}"


def test_every_audited_action_is_a_registered_action_not_a_loose_string():
    loose = []
    for name, path in MODULES.items():
        if not name.startswith("portal"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            first = node.args[1] if callee == "can" and len(node.args) > 1 else node.args[0]
            if callee in ACTION_CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                loose.append(f"{name}:{node.lineno} {callee}({first.value!r})")
            for attribute in (n for n in ast.walk(node) if isinstance(n, ast.Attribute)):
                if isinstance(attribute.value, ast.Name) and attribute.value.id == "Action" and attribute.attr.isupper():
                    assert attribute.attr in Action.__members__, f"{name}:{node.lineno} Action.{attribute.attr}"
    assert loose == []


def test_every_registered_action_has_words_for_reports():
    for action in Action:
        assert action.label and action.label[0].isupper(), action
        assert action.value == action.value.lower() and " " not in action.value, action
