"""``certportal serve``: the Slack app, the link pages and /ca/* on one web server, plus the worker and scheduler.

The worker and the scheduler run in threads of the same process unless
``--no-worker`` is given (then run ``certportal worker`` beside it). Slack's
acknowledgements never wait for them: every Slack listener acks before any
network or key work. Socket Mode is used when ``SLACK_APP_TOKEN`` is set, HTTP at
``/slack/events`` otherwise; the web server runs either way for the link pages.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import click

from bot.cli.common import fail, state
from bot.slack.app import build_notifier, build_slack_app
from bot.web import logs
from bot.web.app import build_web_app
from bot.web.server import Server, config, lower_thread_priority
from bot.web.slack_endpoint import SlackEndpoint
from bot.wiring import build_pipeline, crash_hook_from_environment
from pipeline.context import Pipeline
from pipeline.lifecycle.scheduler import start_scheduler_thread
from pipeline.worker import Worker

log = logging.getLogger("certportal.serve")
WORKER_NICENESS = 10


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: [service] listen_host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: [service] listen_port).")
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
    stop = threading.Event()
    background = [] if no_worker else start_background(p, stop)
    socket_handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_handler = SocketModeHandler(slack_app, secrets.slack_app_token)
        socket_handler.connect()
    log.info(
        "serving on %s:%s, Slack over %s, worker %s",
        host or s.service.listen_host,
        port or s.service.listen_port,
        "Socket Mode" if socket_mode else "HTTP at /slack/events",
        "off (run `certportal worker`)" if no_worker else f"on ({s.worker.threads} threads)",
    )
    try:
        Server(
            config(
                web,
                host=host or s.service.listen_host,
                port=port or s.service.listen_port,
                log_level=s.service.log_level,
            )
        ).run()
    finally:
        stop.set()
        if socket_handler is not None:
            socket_handler.close()
        for thread in background:
            thread.join(timeout=30)


def start_background(p: Pipeline, stop: threading.Event) -> list[threading.Thread]:
    """The worker threads and the lifecycle scheduler, at a lower CPU priority than the web server."""

    def run() -> None:
        lower_thread_priority(WORKER_NICENESS)  # the worker's and scheduler's threads inherit it
        scheduler = start_scheduler_thread(p, stop)
        Worker(p).run(stop)
        scheduler.join(timeout=30)

    background = threading.Thread(target=run, name="certportal-background", daemon=True)
    background.start()
    return [background]


COMMANDS: list[Any] = [serve]
