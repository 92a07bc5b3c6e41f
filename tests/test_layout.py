"""The layout stays as docs/layout.md describes it: no import cycle inside the package, the
spool alone speaks SQL to the events table, and every folder the map names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder of each installed package (pyproject's package-dir).
TREES = {"bridge": ROOT / "bridge", "bridge.adapters": ROOT / "adapters",
         "bridge.agent": ROOT / "agent"}


def _modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in TREES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of the package imported anywhere in ``path`` (functions included), except
    under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def test_no_import_cycle_inside_bridge():
    mods = _modules()
    graph = {name: _imports(path, name, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m.startswith(n + "."):
                continue  # a package importing its own submodule
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_spool_writes_or_reads_the_events_table():
    pattern = re.compile(r"\b(FROM|INTO|UPDATE)\s+events\b")  # SQL, as bridge writes it
    offenders = [str(p.relative_to(ROOT)) for p in _modules().values()
                 if pattern.search(p.read_text(encoding="utf-8"))
                 and not p.is_relative_to(ROOT / "bridge" / "spool")]
    assert not offenders, offenders


def test_every_folder_the_layout_map_names_exists():
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bridge|adapters|agent|tests|bench|config|docs)/[\w/.-]*)`", text))
    assert len(named) > 10, named
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
