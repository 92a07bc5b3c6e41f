"""The docs stay in step with the code: every CLI command and option is in docs/cli.md with
its help, and the README's first commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from bridge.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## `bridge (\S+)`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_command_and_option_is_in_the_cli_reference():
    sections = _sections((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    command = typer.main.get_command(app)
    assert set(sections) == set(command.commands), sorted(set(sections) ^ set(command.commands))
    for name, sub in command.commands.items():
        assert (sub.help or "").strip(), f"bridge {name} has no help text"
        for param in sub.params:
            if param.param_type_name != "option" or "--help" in param.opts:
                continue
            flag = next(o for o in param.opts if o.startswith("--"))
            assert (param.help or "").strip(), f"bridge {name} {flag} has no help text"
            rows = [line for line in sections[name].splitlines() if f"`{flag}`" in line]
            assert rows, f"bridge {name} {flag} is missing from docs/cli.md"


def test_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    [line] = [ln for ln in ci.splitlines() if ln.startswith("readme_test_cmd=")]
    command = line.split("=", 1)[1].strip('"')
    assert command in readme
    assert command + " -rs" in ci or command in ci


def test_migration_fidelity_tables_match_the_tests_expectations():
    """docs/migration-fidelity.md's figures are the ones tests/test_fidelity_matrix.py
    asserts (footnote marks aside), so a changed expectation cannot leave the page stale."""
    import importlib

    import pytest

    matrix = pytest.importorskip("test_fidelity_matrix")
    importlib.reload(matrix)
    doc = (ROOT / "docs" / "migration-fidelity.md").read_text(encoding="utf-8")

    def plain(line: str) -> str:
        line = re.sub(r"[\u02b0-\u02ff\u1d2c-\u1dbf\u2070-\u209f\u00b9\u00b2\u00b3*]", "", line)
        return re.sub(r"\s+", " ", line).strip()

    doc_lines = {plain(line) for line in doc.splitlines() if line.startswith("| ")}
    checked = 0
    for field in (*matrix.FIELDS, "start", "id"):  # the tables the page shows
        for line in matrix._table(matrix.EXPECTED, field).splitlines()[2:]:
            if plain(line) in doc_lines:
                checked += 1
                continue
            source = line.split("|")[1].strip()
            candidates = [d for d in doc_lines if d.startswith(f"| {source} |")]
            raise AssertionError(f"{field}: docs/migration-fidelity.md lacks {line!r}; "
                                 f"rows of that source there: {candidates}")
    assert checked >= 6 * 5
