"""The package's shape: no import cycles, every import points down the ranked layers
(RANKS), no module over 600 lines.

Every ``import unistatus...`` and ``from unistatus... import ...`` of every module under
``src/unistatus`` is read with :mod:`ast`, at module level and inside functions alike
(an import inside a function is still an arrow). ``from unistatus.x import y`` points at
``unistatus.x.y`` when ``y`` is a submodule, else at ``unistatus.x``. The implicit
"importing a submodule first imports its package" is not an edge: a package's
``__init__`` importing its own submodules is normal, not a cycle.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "unistatus"

# Known exceptions, one (importer, imported) pair each; an entry that no longer exists
# fails the test, so the lists cannot go stale. Both are empty: keep them that way.
ALLOWED_CYCLE_EDGES: set[tuple[str, str]] = set()
ALLOWED_UPWARD: set[tuple[str, str]] = set()

# No module over 600 lines: split a module by job before it grows past this. An entry
# here fails the test once its file is back under the limit; the list is empty.
MAX_MODULE_LINES = 600
ALLOWED_LONG_MODULES: set[str] = set()

# Every layer's rank, lowest first. A layer is a top-level module or subpackage of
# unistatus ("" is the package's own __init__, the public API). A module may import its
# own layer and any layer of lower rank: never a higher one, nor another layer of the same
# rank (api/ and sim/ do not import each other). A new subpackage must be ranked here.
RANKS: dict[str, int] = {
    "errors": 0,
    "clock": 0,
    "redact": 0,
    "shown": 0,
    "config_file": 1,
    "config_values": 1,
    "config_sources": 1,
    "version": 0,
    "interrupts": 0,  # stdlib only: what stops a program, for launch and the CLI
    "domain": 1,
    "config": 2,
    "db": 3,
    "adapter": 4,
    "observe.stats": 5,
    "backfill": 6,
    "migration": 7,
    "observe": 8,
    "api": 9,
    "sim": 9,
    "cli": 10,
    "launch": 11,  # the programs' entry point: start-up, then the CLI
    "": 12,
    "__main__": 12,
}
# Modules ranked apart from their subpackage, each with the reason. observe/stats.py
# holds the operation figures every layer reads (the adapter's events are folded into
# them): migration/'s phase gates and the backfill's throttle (which holds back while
# the adapter's p95 suffers) read them, while the rest of observe/ (alerts whose
# responses roll back and repair, the diagnostic) sits above migration/.
OWN_LAYER: dict[str, str] = {"unistatus.observe.stats": "observe.stats"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


@functools.cache
def _bound_names(path: Path) -> frozenset[str]:
    """The names a module binds at its top level (imports, defs, classes, assignments)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(names)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source.

    ``from P import y`` points at the submodule ``P.y`` unless P's ``__init__`` binds
    ``y`` itself (a function re-exported under a submodule's name is P's attribute).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            init = modules.get(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                bound = init is not None and _is_package(init) and alias.name in _bound_names(init)
                found.add(sub if sub in modules and not bound else target)
    unknown = found - set(modules)
    assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        colour[start] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = BLACK
                stack.pop()
                continue
            nxt = todo.pop(0)
            if colour[nxt] == GREY:
                path = [n for n, _ in stack]
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, sorted(graph[nxt])))
    return None


def _top(name: str) -> str:
    """``unistatus.db.tables`` -> ``db``; ``unistatus`` -> ``""``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_walk_sees_the_package() -> None:
    graph = _graph()
    assert {"unistatus", "unistatus.errors", "unistatus.domain.statuses"} <= set(graph)
    assert "unistatus.migration.phases" in graph["unistatus.migration.rollback"]


def test_the_walk_reads_function_bodies_and_submodules(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from unistatus.db import tables\n"
        "from unistatus.backfill import progress\n"
        "def f():\n"
        "    import unistatus.clock\n"
        "    from unistatus.migration.check import run_check\n"
    )
    found = _imports("unistatus.x.mod", source, _modules())
    assert found == {
        "unistatus.db.tables",  # a submodule named in ``from ... import``
        "unistatus.backfill",  # the function its __init__ binds, not the submodule
        "unistatus.clock",
        "unistatus.migration.check",
    }


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = _find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_allow_lists_are_not_stale() -> None:
    graph = _graph()
    for importer, imported in ALLOWED_CYCLE_EDGES | ALLOWED_UPWARD:
        assert imported in graph.get(importer, set()), (
            f"{importer} -> {imported} is gone: delete it from the allow-list"
        )


def test_no_import_cycle() -> None:
    graph = _graph()
    for importer, imported in ALLOWED_CYCLE_EDGES:
        graph[importer].discard(imported)
    cycle = _find_cycle(graph)
    if cycle is not None:
        pytest.fail("import cycle: " + " -> ".join(cycle))


def _layer(name: str) -> str:
    """The layer a module belongs to (a key of RANKS)."""
    return OWN_LAYER.get(name, _top(name))


def test_every_layer_is_ranked() -> None:
    unranked = sorted({_layer(name) for name in _modules()} - set(RANKS))
    assert not unranked, f"give these layers a rank in RANKS: {unranked}"
    stale = sorted(name for name in OWN_LAYER if name not in _modules())
    assert not stale, f"OWN_LAYER names modules that do not exist: {stale}"


def _upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that do not point down: to a layer of the same or a higher rank."""
    return sorted(
        (importer, imported)
        for importer, imports in graph.items()
        for imported in imports
        if _layer(imported) != _layer(importer)
        and RANKS[_layer(imported)] >= RANKS[_layer(importer)]
    )


def test_the_rank_check_catches_upward_and_sideways_imports() -> None:
    graph = {
        "unistatus.migration.phases": {"unistatus.observe.stats", "unistatus.db.tables"},
        "unistatus.observe.stats": {"unistatus.observe.metrics"},  # up: stats is below
        "unistatus.api.state": {"unistatus.sim.seed"},  # sideways: same rank
        "unistatus.observe.alert_responses": {"unistatus.migration.rollback"},
        "unistatus.db.tables": {"unistatus"},  # the public API is the top
    }
    assert _upward(graph) == [
        ("unistatus.api.state", "unistatus.sim.seed"),
        ("unistatus.db.tables", "unistatus"),
        ("unistatus.observe.stats", "unistatus.observe.metrics"),
    ]


@pytest.mark.parametrize("layer", sorted(RANKS))
def test_every_import_points_down(layer: str) -> None:
    wrong = [
        f"{importer} -> {imported} (layer {_layer(imported) or 'unistatus'!r})"
        for importer, imported in _upward(_graph())
        if _layer(importer) == layer and (importer, imported) not in ALLOWED_UPWARD
    ]
    rank = RANKS[layer]
    allowed = sorted(name or "unistatus" for name, r in RANKS.items() if r < rank)
    assert not wrong, (
        f"{layer or 'unistatus'} (rank {rank}) may import only its own layer and "
        f"{allowed}:\n" + "\n".join(wrong)
    )


def test_only_the_entry_points_import_the_cli() -> None:
    wrong = sorted(
        f"{importer} -> {imported}"
        for importer, imports in _graph().items()
        if _top(importer) not in {"cli", "launch", "__main__"}
        for imported in imports
        if _top(imported) == "cli"
    )
    assert not wrong, "only unistatus.cli and the entry points import the CLI:\n" + "\n".join(wrong)


def _module_lines() -> dict[str, int]:
    """Lines of every module under src/unistatus, by path relative to src."""
    return {
        path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((SRC / ROOT).rglob("*.py"))
    }


def test_no_module_is_over_600_lines() -> None:
    sizes = _module_lines()
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    unexpected = sorted(f"{p}: {n} lines" for p, n in over.items() if p not in ALLOWED_LONG_MODULES)
    assert not unexpected, (
        f"modules over {MAX_MODULE_LINES} lines (split them by job):\n" + "\n".join(unexpected)
    )
    stale = sorted(
        f"{p}: {sizes[p]} lines" if p in sizes else f"{p}: no such module"
        for p in ALLOWED_LONG_MODULES - set(over)
    )
    assert not stale, "no longer too long, delete from ALLOWED_LONG_MODULES:\n" + "\n".join(stale)
