"""`pushpool import prefect`: copy work pools, queues and deployments from a running Prefect server."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import Output, OutputOpt, app, opened, print_json, say

import_app = typer.Typer(no_args_is_help=True, help="Copy pools, queues and deployments from another system.")
app.add_typer(import_app, name="import")


@import_app.command("prefect")
def import_prefect(
    ctx: typer.Context,
    api_url: Annotated[
        str,
        typer.Option(
            "--api-url",
            envvar="PREFECT_API_URL",
            metavar="URL",
            help="Prefect's API URL, e.g. http://127.0.0.1:4200/api (default: $PREFECT_API_URL).",
        ),
    ],
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="PREFECT_API_KEY", metavar="KEY", show_default=False, help="Bearer key (Prefect Cloud)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Copy work pools (types mapped to push types), queues and deployments from a Prefect server.

    Prints the plan and what is not carried over (with why); a second import changes nothing.
    """
    from .. import prefect_import
    from ..apply import execute

    with opened(ctx) as store:
        plan = prefect_import.plan_import(store, api_url, api_key=api_key)
        if output is not Output.json:  # the plan first, then the writes
            for line in plan.lines():
                typer.echo(line)
            for note in plan.notes:
                typer.echo(f"Not carried over: {note}")
        if not dry_run:
            execute(store, plan)
    if output is Output.json:
        return print_json({"dry_run": dry_run, "actions": plan.as_dicts(), "not_carried_over": plan.notes})
    if dry_run:
        say("Dry run: nothing written.")
    else:
        say("Imported." if plan.has_changes else "Nothing to change.")
