"""``certportal demo``: the main job end to end on the embedded defaults, without Slack.

It issues a certificate for a sample mailbox through the whole pipeline (key,
CSR, embedded CA, verification, PFX, local vault), serves the link pages on
loopback and prints the two one-time links an employee would get from the
"Show my password" and "Download certificate" buttons.
"""

from __future__ import annotations

import socket
import threading

import click

from bot.cli.common import actor, fail, state
from bot.console import ConsoleNotifier
from bot.web import logs
from bot.web.app import build_web_app
from bot.web.server import Server, config
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.drive import run_until_settled
from pipeline.errors import PolicyError
from pipeline.links import create_link
from pipeline.requests import create_request, get_request, open_request_for


@click.command()
@click.option("--mailbox", default="alice@example.com", show_default=True, help="Who the sample certificate is for.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the link pages listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port the link pages listen on.")
@click.option("--exit-after", type=float, default=None, hidden=True, help="Stop serving after this many seconds.")
def demo(mailbox: str, host: str, port: int, exit_after: float | None) -> None:
    """Issue a certificate for MAILBOX and serve its one-time password and PFX links on loopback."""
    cli = state()
    s = cli.settings
    logs.configure("WARNING")
    base = f"http://{host}:{port}"
    s.web.public_url = base
    try:
        # Listening before the links are printed: a browser opening one at once is queued, not refused.
        listener = socket.create_server((host, port))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}; choose another with --port")
        return
    # The demo runs without Slack even where Slack tokens are set.
    p = build_pipeline(s, notifier=ConsoleNotifier())
    who = actor()
    try:
        request = create_request(
            p, mailbox=mailbox, requested_by=who, reason="certportal demo", approved=True, approver=who
        )
    except PolicyError as exc:
        # A previous run stopped half-way: finish that request instead.
        existing = open_request_for(p, mailbox.strip().lower())
        if existing is None or existing["state"] == "pending_approval":
            fail(str(exc))
            return
        request = existing
    click.echo(f"issuing an S/MIME certificate for {request['mailbox']} on the embedded CA ...")
    outcome = run_until_settled(p, [request["id"]], timeout=600)[request["id"]]
    cert = current_certificate(p, request["mailbox"])
    if outcome != "issued" or cert is None:
        fail(f"the request ended {outcome}: {get_request(p, request['id'])['failure_reason']}")
        return
    click.echo(f"issued {cert['mailbox']} serial {cert['serial']} expires {cert['not_after'][:10]}")
    ttl = s.links.ttl_minutes
    password_token, _ = create_link(p, kind="password", serial=cert["serial"], owner_slack_id="", actor=who)
    pfx_token, _ = create_link(p, kind="pfx", serial=cert["serial"], owner_slack_id="", actor=who)
    click.echo(f"one-time links (each works once, for {ttl} minutes):")
    click.echo(f"  password:    {base}/links/{password_token}")
    click.echo(f"  certificate: {base}/links/{pfx_token}")
    click.echo(f"serving the link pages on {base} - press Ctrl-C to stop")
    server = Server(config(build_web_app(p), host=host, port=port, log_level="warning"))
    if exit_after is not None:
        timer = threading.Timer(exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    server.run(sockets=[listener])


COMMANDS = [demo]
