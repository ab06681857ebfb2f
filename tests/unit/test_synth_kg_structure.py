"""synth_kg is the ground floor: it imports nothing from kdel and its modules import each other without cycles.

Checked on the source with `ast`, counting every import statement (module level and inside functions), so a
lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "synth_kg"


def _module_name(path: Path) -> str:
    return "synth_kg" if path.name == "__init__.py" else f"synth_kg.{path.stem}"


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement of `path` (`from pkg import name` counts pkg.name when it
    is a module of the package, else pkg)."""
    modules = {_module_name(p) for p in PKG.glob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: use absolute imports")
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.glob("*.py")}
    return {m: {i for i in _imports(p) if i in modules} for m, p in modules.items()}


def test_synth_kg_imports_nothing_from_kdel():
    offenders = {p.name: sorted(i for i in _imports(p) if i == "kdel" or i.startswith("kdel."))
                 for p in sorted(PKG.glob("*.py"))}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"synth_kg must not import kdel: {offenders}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_no_import_cycles_in_synth_kg():
    graph = _graph()
    assert "synth_kg.bundle" in graph["synth_kg.graph"], "the checker must see graph -> bundle"
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = _graph()
    graph["synth_kg.bundle"] = graph["synth_kg.bundle"] | {"synth_kg.graph"}  # the circle this round opened
    cycle = _find_cycle(graph)
    assert cycle is not None and {"synth_kg.graph", "synth_kg.bundle"} <= set(cycle)


def test_kdel_user_error_is_synth_kgs_error():
    import kdel.errors
    import synth_kg
    import synth_kg.errors

    assert kdel.errors.UserError is synth_kg.errors.UserError is synth_kg.UserError
    with pytest.raises(kdel.errors.UserError, match="unknown topology"):
        synth_kg.generate(synth_kg.KGConfig(topology="tree"))


def test_a_broken_bundle_is_one_line_and_exit_2(tmp_path, capsys):
    from kdel.cli.main import main

    (tmp_path / "kg").mkdir()
    (tmp_path / "kg" / "kg.json").write_text('{"format": "kdel-kg/1", "entities": 3}')
    assert main(["kg", "stats", str(tmp_path / "kg")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdel: error: ") and "kg.json" in lines[0], lines
