"""`tasklab data cleanup`: remove finished tasks older than a duration, on demand.

The same sweep the roles run in the background at `task_retention` (common/adapters/
redis_retention.py), run here in bounded batches until nothing older is left, with progress.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from common.cli.errors import fail
from common.config import get_settings
from common.config.durations import DurationError, parse_duration

data_app = typer.Typer(
    help="Data tasklab keeps in Redis: retention and clean-up.", no_args_is_help=True
)


@data_app.command("cleanup")
def cleanup(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="30d, 12h, 90m, 3600s; finished tasks unchanged this long are removed "
            "(default: the task_retention setting)",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Tasks per batch.")] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be removed.")
    ] = False,
) -> None:
    """Remove finished tasks older than --older-than, with their history, logs and requestId.

    Only SUCCESS, FAILED and CANCELLED tasks are removed; others are kept whatever their age.
    """
    from common.adapters.redis_client import redis_client
    from common.adapters.redis_dead_letter import dead_letter_stats
    from common.adapters.redis_retention import RedisRetention

    settings = get_settings()
    label = older_than if older_than is not None else f"{settings.task_retention:g}s"
    try:
        seconds = parse_duration(older_than if older_than is not None else settings.task_retention)
    except DurationError as exc:
        fail(f"--older-than: {exc}", 2)
    client = redis_client(settings.redis_url)
    retention = RedisRetention(client, batch=batch)
    if dry_run:
        survey = retention.survey(seconds)
        finished = sum(survey.finished.values())
        typer.echo(
            f"would remove {finished} finished task(s) older than {label}{_by(survey.finished)}"
        )
        kept = sum(survey.kept.values())
        typer.echo(
            f"would keep {kept} older task(s) not finished or changed since{_by(survey.kept)}"
        )
        length, dropped = dead_letter_stats(client)
        typer.echo(f"dead-letter list: {length} entries, {dropped} dropped by its cap so far")
        return
    now = time.time()
    # Each batch removes its finished tasks or steps past the ones it keeps, so this many
    # batches always reach the end; the bound keeps the loop finite whatever happens meanwhile.
    rounds = retention.old_entries(seconds, now) // batch + 2
    removed = 0
    for number in range(1, rounds + 1):
        report = retention.sweep(seconds, batch, now=now)
        removed += report.removed
        if report.done:
            break
        typer.echo(f"batch {number}: removed {report.removed}, {removed} so far", err=True)
    typer.echo(f"removed {removed} finished task(s) older than {label}")


def _by(counts) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"
