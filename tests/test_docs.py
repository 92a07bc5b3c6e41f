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
