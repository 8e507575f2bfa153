"""What every command shares: settings and the pipeline, built once on first use."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import Any

import click

from bot.wiring import build_pipeline, crash_hook_from_environment, settings_from_environment
from pipeline.context import Pipeline
from pipeline.settings import Settings


@dataclass
class CliState:
    config: str | None
    environ: dict[str, str]
    _settings: Settings | None = None
    _pipeline: Pipeline | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_from_environment(self.config, self.environ)
        return self._settings

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.settings, hook=crash_hook_from_environment(self.environ))
        return self._pipeline


def state() -> CliState:
    obj: Any = click.get_current_context().obj
    assert isinstance(obj, CliState)
    return obj


def actor() -> str:
    """Who is at the keyboard, for the audit."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:unknown"


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)
