"""`tasklab config validate --file F`: a configuration file checked before it is deployed.

One line per problem (`F: key: problem`) and exit 2, or one `ok` line and exit 0; the checks
are in common/config/validate.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.config.validate import is_production, validate_file

config_app = typer.Typer(help="Configuration files: check one before deploying it.")


@config_app.callback()
def _config() -> None:
    # A callback keeps `validate` a subcommand (`tasklab config validate`), not the group.
    return


@config_app.command("validate")
def validate(
    file: Annotated[Path, typer.Option("--file", "-f", help="The TOML file to check.")],
    env: Annotated[
        str | None,
        typer.Option(
            help="Check it as this profile (production adds the production rules); "
            "default: the file's name (production.toml = production).",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="The base.toml it is layered on; default: the one next to it."),
    ] = None,
) -> None:
    """List every problem of a configuration file, one line each; exit 2 if there is one."""
    report = validate_file(file, env, base)
    for problem in report.problems:
        typer.echo(problem.line(file))
    if report.problems:
        raise typer.Exit(2)
    profile = env or file.stem
    rules = "production rules included" if is_production(profile) else "no production rules"
    runtime = (
        f"; from the environment at run time: {', '.join(report.runtime_vars)}"
        if report.runtime_vars
        else ""
    )
    typer.echo(f"{file}: ok ({report.keys} keys, profile {profile}, {rules}{runtime})")
