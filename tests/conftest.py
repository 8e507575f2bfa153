"""Fixtures every test tier shares: settings on a temporary data dir, a wired pipeline, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.console import ConsoleNotifier
from bot.wiring import build_pipeline
from pipeline.clock import FakeClock, SystemClock
from pipeline.context import Pipeline
from pipeline.secretbox import new_key
from pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
# One slapd for the whole session, shared by every LDAP test module.
pytest_plugins = ["tests.support.slapd"]


@pytest.fixture
def master_key() -> str:
    return new_key()


@pytest.fixture
def base_env(tmp_path: Path, master_key: str) -> dict[str, str]:
    """Environment for a CertPortal process on its own data dir (no inherited CERTPORTAL_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTPORTAL", "SLACK_"))}
    env.update({"CERTPORTAL_DATA_DIR": str(tmp_path / "data"), "CERTPORTAL_MASTER_KEYS": master_key})
    # Fast tests: RSA-2048 unless a test asks otherwise, and a worker that polls often.
    env.setdefault("CERTPORTAL__CRYPTO__KEY_TYPE", "ec-p256")
    env.setdefault("CERTPORTAL__WORKER__IDLE_POLL_SECONDS", "0.05")
    env.setdefault("CERTPORTAL__WORKER__BACKOFF_BASE_SECONDS", "0.05")
    env.setdefault("CERTPORTAL__CA__POLL_INTERVAL_SECONDS", "0.05")
    return env


@pytest.fixture
def make_settings(base_env: dict[str, str]) -> Callable[..., Settings]:
    """``make_settings(**{"ca.local.validity_days": 90})`` -> Settings on the test's data dir."""

    def make(config: str | Path | None = None, **overrides: Any) -> Settings:
        env = dict(base_env)
        for dotted, value in overrides.items():
            env["CERTPORTAL__" + dotted.replace(".", "__").upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return load_settings(config, env)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SystemClock().now())


@pytest.fixture
def notifier() -> ConsoleNotifier:
    return ConsoleNotifier()


@pytest.fixture
def pipeline(make_settings: Callable[..., Settings], notifier: ConsoleNotifier) -> Iterator[Pipeline]:
    """A pipeline on embedded defaults with the real clock and a notifier that records what it was told."""
    p = build_pipeline(make_settings(), notifier=notifier)
    yield p
    p.store.close()


@pytest.fixture
def run_cli(base_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``certportal ARGS`` in a fresh process, as an operator would."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**base_env, **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "bot", *args],
            env=full_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"certportal {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run
