"""The ``bridge`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from bridge.cli import demo, doctor, local, migrate, prune, sync, ui

__all__ = ["app", "main"]

app = typer.Typer(
    name="bridge",
    help="Local-first experiment tracking: inspect the spool, sync it to backends, migrate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

local.register(app)
sync.register(app)
migrate.register(app)
doctor.register(app)
prune.register(app)
demo.register(app)
ui.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
