"""``certportal serve``: the Slack app, the link pages and /ca/* on one web server, plus the worker and scheduler.

The worker and the scheduler run as a supervised child process (``certportal
worker`` at a lower CPU priority) unless ``--no-worker`` is given, in which case
run ``certportal worker`` yourself. A separate process, because parts of
provisioning (linting, PKCS#12, S/MIME checks) hold the GIL for long stretches; in
threads of this process they would hold up Slack's acknowledgements. Every Slack
listener acks before any network work. Socket Mode is used when
``SLACK_APP_TOKEN`` is set, HTTP at ``/slack/events`` otherwise; the web server
runs either way for the link pages.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import click

from bot.cli.common import fail, state
from bot.slack.app import build_notifier, build_slack_app
from bot.web import logs
from bot.web.app import build_web_app
from bot.web.server import Server, config
from bot.web.slack_endpoint import SlackEndpoint
from bot.wiring import build_pipeline, crash_hook_from_environment

log = logging.getLogger("certportal.serve")
WORKER_NICENESS = 10


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: [web] listen_host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: [web] listen_port).")
@click.option("--no-worker", is_flag=True, help="Serve only; run `certportal worker` as a separate process.")
def serve(host: str | None, port: int | None, no_worker: bool) -> None:
    """Run the Slack app, link pages, /healthz and /ca/* (and, by default, the worker and scheduler)."""
    cli = state()
    s = cli.settings
    logs.configure(s.service.log_level)
    secrets = s.secrets
    socket_mode = bool(secrets.slack_app_token)
    if not secrets.slack_bot_token:
        fail("SLACK_BOT_TOKEN is not set; see docs/slack.md (`certportal demo` runs without Slack)")
    if not socket_mode and not secrets.slack_signing_secret:
        fail("set SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode); see docs/slack.md")
    notifier = build_notifier(s)
    p = build_pipeline(s, notifier=notifier, hook=crash_hook_from_environment(cli.environ))
    slack_app = build_slack_app(p, notifier)
    endpoint = None if socket_mode else SlackEndpoint(slack_app, signing_secret=secrets.slack_signing_secret)
    web = build_web_app(p, slack=endpoint)
    worker = None if no_worker else WorkerProcess(cli.config, cli.environ).start()
    socket_handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_handler = SocketModeHandler(slack_app, secrets.slack_app_token)
        socket_handler.connect()
    log.info(
        "serving on %s:%s, Slack over %s, worker %s",
        host or s.web.listen_host,
        port or s.web.listen_port,
        "Socket Mode" if socket_mode else "HTTP at /slack/events",
        "off (run `certportal worker`)" if no_worker else f"in a child process ({s.worker.threads} threads)",
    )
    try:
        Server(
            config(
                web,
                host=host or s.web.listen_host,
                port=port or s.web.listen_port,
                log_level=s.service.log_level,
            )
        ).run()
    finally:
        if socket_handler is not None:
            socket_handler.close()
        if worker is not None:
            worker.stop()


class WorkerProcess:
    """``certportal worker`` (provisioning worker and lifecycle scheduler) as a child that is restarted if it dies.

    It runs in its own session, so a Ctrl-C in the terminal reaches only this
    process, which then stops the child with SIGTERM (the worker finishes its step).
    """

    def __init__(self, config: str | None, environ: dict[str, str]) -> None:
        nice = shutil.which("nice")
        command = [sys.executable, "-m", "bot", *(["--config", config] if config else []), "worker"]
        self.argv = [nice, "-n", str(WORKER_NICENESS), *command] if nice else command
        self.environ = environ
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="certportal-worker-supervisor", daemon=True)

    def start(self) -> WorkerProcess:
        self._thread.start()
        return self

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            self.proc = subprocess.Popen(self.argv, env=self.environ, start_new_session=True)
            code = self.proc.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.error("the worker process exited with status %s; starting it again in %.0f s", code, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, 60.0)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("the worker did not stop within %.0f s; killing it", timeout)
                proc.kill()
                proc.wait()
        self._thread.join(timeout=5)


COMMANDS: list[Any] = [serve]
