"""``covey submit``, ``cancel`` and ``signal``: inputs, acknowledged once committed."""

from __future__ import annotations

from typing import Any

import click
import orjson

from covey.cli.render import console
from covey.cli.run import parse_inputs
from covey.errors import ConfigError, InputError
from covey.runtime.eventloop import run_async
from covey.runtime.retention import parse_retention

__all__ = ["COMMANDS"]


@click.command("submit")
@click.argument("file")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="Input field (repeatable).")
@click.option("--input-file", type=click.Path(dir_okay=False), help="JSON file holding the input.")
@click.option("--run-id", help="Choose the run id (repeating one is a no-op).")
@click.option("--wait", "wait_for", is_flag=True, help="Wait for the run to finish and print its output.")
@click.pass_obj
def submit_command(
    settings: Any,
    file: str,
    inputs: tuple[str, ...],
    input_file: str | None,
    run_id: str | None,
    wait_for: bool,
) -> None:
    """Submit the workflow spec in FILE; a runner (covey serve) runs it."""
    from covey.spec.load import load_spec_file

    spec = load_spec_file(file)
    client = settings.client()

    async def go() -> None:
        chosen = await client.submit(spec, parse_inputs(inputs, input_file), run_id=run_id)
        console.print(chosen)
        if wait_for:
            info = await client.wait(chosen)
            console.print_json(
                orjson.dumps({"status": info.status, "output": info.output, "error": info.error}).decode()
            )

    run_async(go())


@click.command("cancel")
@click.argument("run_id")
@click.option("--step", help="Cancel only this step (its downstream steps are skipped).")
@click.option("--reason", default="cancelled by request", show_default=True)
@click.pass_obj
def cancel_command(settings: Any, run_id: str, step: str | None, reason: str) -> None:
    """Cancel a run, or one step of it."""
    run_async(settings.client().cancel(run_id, step=step, reason=reason))
    console.print(f"cancel of {run_id}{' step ' + step if step else ''} accepted")


@click.command("gc")
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Purge runs finished longer ago than this (90s, 30m, 12h, 7d; default: the --retention).",
)
@click.pass_obj
def gc_command(settings: Any, older_than: str | None) -> None:
    """Purge finished runs past their retention now, with their histories, outputs and run state.

    The engine does this by itself once a minute; this is for freeing space
    at once, or with a shorter retention than the engine's.
    """
    older_than_ms = settings.retention_ms if older_than is None else parse_retention(older_than)
    if older_than_ms is None:
        raise ConfigError("the retention is 'forever', so nothing is purged: give --older-than DURATION")
    purged = run_async(settings.client().purge_finished(older_than_ms))
    console.print(f"purged {purged} finished run{'' if purged == 1 else 's'}")


@click.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.argument("payload", required=False)
@click.option("--id", "signal_id", help="Signal id: repeating one is a no-op.")
@click.pass_obj
def signal_command(settings: Any, run_id: str, name: str, payload: str | None, signal_id: str | None) -> None:
    """Send signal NAME to a run, with an optional JSON PAYLOAD."""
    value = None
    if payload is not None:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"payload is not JSON: {exc}", field="payload") from None
    run_async(settings.client().signal(run_id, name, value, signal_id=signal_id))
    console.print(f"signal {name} to {run_id} accepted")


COMMANDS = [submit_command, cancel_command, signal_command, gc_command]
