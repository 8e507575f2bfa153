"""The ``certportal`` command line: one group, sub-commands in small modules beside this one."""

from __future__ import annotations

import logging
import os
import sys

import click

from bot.cli import admin, demo, lifecycle, ops, serve
from bot.cli.common import CliState
from pipeline.errors import CertPortalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file (default: $CERTPORTAL_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """CertPortal: self-service S/MIME certificates."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliState(config=config, environ=dict(os.environ))
    ctx.call_on_close(ctx.obj.close)


for module in (admin, ops, lifecycle, serve, demo):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    try:
        # Without standalone mode click returns (not raises) the code of an Exit
        # raised inside a command, e.g. by ``fail()``.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except CertPortalError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
