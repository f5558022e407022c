"""The import graph of the package, read from the source with :mod:`ast` (issue 24).

Every module of the folders that pyproject's ``package-dir`` maps into ``retune_suite`` is
parsed, and every import in it (at module level and inside functions, absolute and relative,
and ``importlib.import_module("...")`` with a literal name) is resolved to the module it runs.
The checks:

- no import cycle among ``retune_suite`` modules;
- one direction of dependency (DESIGN.md, Layout): the machinery ``retune_suite.operators``
  never imports what is iterated (``.maps``), ``bounds``, ``experiments`` or ``testing``;
  ``maps`` never imports ``bounds`` or ``experiments``; ``bounds`` never imports
  ``experiments`` or ``maps``; nothing installed imports ``benchmarks`` or ``tests``;
- no file of the repository imports the old top-level names ``operators``, ``bounds`` or
  ``experiments``: they are folders mapped into ``retune_suite``, not importable names;
- pyproject's ``packages`` lists exactly the package folders.

An edge goes to the module named by the import: ``from .theta import Step`` to ``theta``,
``from . import estimators`` to ``estimators``, ``from retune_suite.operators import restart``
to ``retune_suite.operators`` itself. The parent packages that Python initialises first are
not edges (a package's ``__init__`` importing its own sub-modules is not a cycle).
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
NAMESPACE = "retune_suite"
OLD_NAMES = ("operators", "bounds", "experiments")
SKIP_DIRS = {"build", "_build", "dist", "__pycache__", "node_modules"}  # + hidden, *.egg-info


@dataclass(frozen=True)
class Import:
    """One import statement's target, as written and as resolved."""

    source: str  # the importing module (or the file, outside the package)
    line: int
    target: str  # the module it runs: absolute, dotted
    runtime: bool  # False under ``if TYPE_CHECKING:``


def _mapped_folders() -> dict[str, Path]:
    return {name: ROOT / folder for name, folder in PACKAGE_DIR.items()}


def _package_folders() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` reachable from a mapped folder, by package name."""
    mapped = _mapped_folders()
    claimed = {folder.resolve() for folder in mapped.values()}
    found: dict[str, Path] = {}
    for name, folder in mapped.items():
        stack = [(name, folder)]
        while stack:
            package, path = stack.pop()
            if not (path / "__init__.py").is_file():
                continue
            found[package] = path
            for child in sorted(path.iterdir()):
                if child.is_dir() and child.resolve() not in claimed:
                    stack.append((f"{package}.{child.name}", child))
    return found


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every module of the installed package."""
    modules: dict[str, tuple[Path, bool]] = {}
    for package, folder in _package_folders().items():
        modules[package] = (folder / "__init__.py", True)
        for file in sorted(folder.glob("*.py")):
            if file.name != "__init__.py":
                modules[f"{package}.{file.stem}"] = (file, False)
    return modules


MODULES = _modules()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the bodies of ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(file: Path, module: str | None, is_package: bool) -> Iterator[Import]:
    """The imports of ``file``; relative ones resolved against ``module`` (None: a file
    outside the package, whose relative imports are not followed)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    guarded = _type_checking_lines(tree)
    source = module or str(file.relative_to(ROOT))
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif module is None:
                continue
            else:
                package = module if is_package else module.rpartition(".")[0]
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{source}:{node.lineno}: relative import beyond the top")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULES else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            targets = [node.args[0].value]
        for target in dict.fromkeys(targets):
            yield Import(source, node.lineno, target, node.lineno not in guarded)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return [
        found
        for module, (file, is_package) in MODULES.items()
        for found in _imports(file, module, is_package)
    ]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _where(found: Import) -> str:
    return f"{found.source}:{found.line} imports {found.target}"


def test_the_package_is_found():
    """The walk sees the package (a broken walk would pass every check below)."""
    for module in (
        NAMESPACE,
        f"{NAMESPACE}.operators.iteration",
        f"{NAMESPACE}.operators.hypergrad.certificate",
        f"{NAMESPACE}.operators.maps.section4",
        f"{NAMESPACE}.bounds.report",
        f"{NAMESPACE}.experiments.cli",
    ):
        assert module in MODULES, module


def test_every_package_import_resolves(imports):
    """An import of a ``retune_suite`` name names a module of the source tree."""
    unresolved = [
        _where(i) for i in imports if _inside(i.target, NAMESPACE) and i.target not in MODULES
    ]
    assert not unresolved, "\n".join(unresolved)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (closed: first == last) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:  # a shortest way back to the start, inside the component
        members = set(component)
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        cycle: list[str] | None = None
        while frontier and cycle is None:
            after = []
            for node in frontier:
                for nxt in sorted(edges[node] & members):
                    if nxt == start:
                        cycle = [*paths[node], start]
                        break
                    if nxt not in paths:
                        paths[nxt] = [*paths[node], nxt]
                        after.append(nxt)
                if cycle is not None:
                    break
            frontier = after
        assert cycle is not None
        cycles.append(cycle)
    return cycles


def test_cycles_are_found():
    """The search itself, on a graph with a self-import, a 3-cycle and a tail."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(_cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle(imports):
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    lines: dict[tuple[str, str], int] = {}
    for i in imports:
        if i.runtime and i.target in MODULES:  # a module importing itself is a cycle too
            edges[i.source].add(i.target)
            lines.setdefault((i.source, i.target), i.line)
    found = [
        " -> ".join(f"{a} (line {lines[a, b]})" for a, b in itertools.pairwise(cycle))
        + f" -> {cycle[-1]}"
        for cycle in _cycles(edges)
    ]
    assert not found, "import cycles:\n" + "\n".join(found)


OPERATORS = f"{NAMESPACE}.operators"
MAPS = f"{NAMESPACE}.operators.maps"
BOUNDS = f"{NAMESPACE}.bounds"
EXPERIMENTS = f"{NAMESPACE}.experiments"
TESTING = f"{NAMESPACE}.testing"


def _layer(module: str) -> str | None:
    if _inside(module, MAPS):
        return "maps"
    if _inside(module, OPERATORS):
        return "operators"
    if _inside(module, BOUNDS):
        return "bounds"
    return None


FORBIDDEN = {
    "operators": (MAPS, BOUNDS, EXPERIMENTS, TESTING),
    "maps": (BOUNDS, EXPERIMENTS),
    "bounds": (EXPERIMENTS, MAPS),
}


def test_one_direction_of_dependency(imports):
    """benchmarks -> experiments -> bounds -> operators, and maps -> operators' machinery."""
    wrong = [
        _where(i)
        for i in imports
        if (layer := _layer(i.source)) is not None
        and any(_inside(i.target, above) for above in FORBIDDEN[layer])
    ]
    wrong += [
        _where(i) for i in imports if i.target.split(".")[0] in ("benchmarks", "tests", "conftest")
    ]
    assert not wrong, "\n".join(wrong)


def _repository_files() -> Iterator[Path]:
    for file in sorted(ROOT.rglob("*.py")):
        parts = file.relative_to(ROOT).parts[:-1]
        if any(p in SKIP_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in parts):
            continue
        yield file


def test_no_file_imports_the_old_top_level_names():
    """``operators``, ``bounds`` and ``experiments`` are folders of this repository, installed
    as ``retune_suite.*``: importing them by those names would import a user's own module (or
    nothing), so no file of the repository (package, tests, benchmarks, examples) does."""
    old = []
    for file in _repository_files():
        for i in _imports(file, None, False):
            if i.target.split(".")[0] in OLD_NAMES:
                old.append(f"{i.source}:{i.line} imports {i.target}")
    assert not old, "\n".join(old)


def _folder_of(package: str) -> Path | None:
    """The folder pyproject's package-dir gives ``package`` (the longest mapped prefix)."""
    for prefix in sorted(PACKAGE_DIR, key=len, reverse=True):
        if _inside(package, prefix):
            rest = package[len(prefix) :].lstrip(".")
            return ROOT / PACKAGE_DIR[prefix] / Path(*rest.split(".") if rest else ())
    return None


def test_pyproject_lists_every_package_folder():
    """Every folder holding an ``__init__.py`` under a mapped folder is a listed package (else
    a wheel leaves it out), and every listed package is such a folder."""
    folders = _package_folders()
    unlisted = sorted(set(folders) - set(PACKAGES))
    assert not unlisted, f"package folders missing from [tool.setuptools] packages: {unlisted}"
    for package in PACKAGES:
        folder = _folder_of(package)
        assert folder is not None, f"{package}: no package-dir entry maps it"
        assert (folder / "__init__.py").is_file(), f"{package}: {folder} is not a package folder"
        assert folders.get(package) == folder, package
