"""The Bolt app: one set of listeners for both transports (HTTP at /slack/events, or Socket Mode).

Every listener acknowledges inline without touching the network (``process_before_response``),
so Slack gets its answer in milliseconds however busy the worker is; the slow half
is then handed to a pool of lower-priority threads and replies through
``respond()``/the Web API. (Bolt's own lazy listeners would do the same but
deep-copy the whole request for every one, which was most of the per-request cost
of dispatch.)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App, BoltResponse, Respond

from bot.slack import actions, blocks, commands, events
from bot.slack.approvers import Approvers
from bot.slack.client import build_client
from bot.slack.context import Handler, SlackDeps, lazy
from bot.slack.notifier import SlackNotifier
from bot.slack.payloads import MalformedRequest, check
from bot.slack.views import DENY_VIEW, REVOKE_VIEW
from bot.web.server import lower_thread_priority
from pipeline.context import Pipeline
from pipeline.settings import Settings

log = logging.getLogger("certportal.slack")
COMMAND = "/smime"
# Few: the slow halves mostly wait on Slack's Web API, and every extra runnable thread
# is one more the event loop queues behind for the GIL before it can send an ack.
LISTENER_THREADS = 4
LISTENER_NICENESS = 5


def build_notifier(settings: Settings) -> SlackNotifier:
    """The notifier the pipeline is built with; ``build_slack_app`` attaches the pipeline to it."""
    client = build_client(settings)
    return SlackNotifier(client, settings, Approvers(settings.slack, client))


def build_slack_app(p: Pipeline, notifier: SlackNotifier) -> App:
    """The Bolt app over ``p``.

    Bolt's own signature check is off: over HTTP, ``bot.web.slack_endpoint`` verifies
    every request before Bolt sees it, and Socket Mode has no signature to check.
    """
    notifier.attach(p)
    deps = SlackDeps(p=p, client=notifier.client, notifier=notifier, approvers=notifier.approvers)
    secrets = p.settings.secrets
    # The slow halves of handlers run here, below the priority of the threads that ack.
    background = ThreadPoolExecutor(
        max_workers=LISTENER_THREADS,
        thread_name_prefix="slack-listener",
        initializer=lower_thread_priority,
        initargs=(LISTENER_NICENESS,),
    )
    app = App(
        client=notifier.client,
        signing_secret=secrets.slack_signing_secret,
        request_verification_enabled=False,
        token_verification_enabled=False,
        process_before_response=True,
        listener_executor=background,
        raise_error_for_unhandled_request=False,
    )

    app.use(_well_formed)

    def on(kind: Callable[..., Any], ack: Callable[..., None], handler: Handler) -> None:
        kind(_ack_then(ack, lazy(deps, handler), background))

    # Help needs no lazy half (and so costs the least): it is answered by the ack itself.
    app.command(COMMAND, matchers=[commands.wants_help])(commands.ack_help)
    on(app.command(COMMAND), commands.ack_command, commands.run_command)
    on(app.action(blocks.APPROVE), actions.ack_only, actions.approve)
    on(app.action(blocks.DENY), actions.ack_only, actions.deny)
    on(app.action(blocks.SHOW_PASSWORD), actions.ack_only, actions.show_password)
    on(app.action(blocks.DOWNLOAD), actions.ack_only, actions.download_certificate)
    on(app.action(blocks.RENEW), actions.ack_only, actions.renew_certificate)
    on(app.action(blocks.REQUEST), actions.ack_only, actions.request_certificate)
    on(app.view(DENY_VIEW), actions.ack_deny_submission, actions.deny_submitted)
    on(app.view(REVOKE_VIEW), actions.ack_revoke_submission, actions.revoke_submitted)
    # A URL button still sends a payload; it only needs its ack.
    app.action(blocks.OPEN_LINK)(actions.ack_only)

    def home_opened(body: dict[str, Any], respond: Respond) -> None:
        _logged(events.home_opened, deps, body)

    def user_changed(body: dict[str, Any], respond: Respond) -> None:
        _logged(events.user_changed, deps, body)

    app.event("app_home_opened")(_ack_then(_ack_event, home_opened, background))
    app.event("user_change")(_ack_then(_ack_event, user_changed, background))
    return app


def _ack_then(ack_fn: Callable[..., None], later: Callable[..., None], background: Executor) -> Callable[..., None]:
    """A listener that acks with ``ack_fn`` (given ``ack``, and ``body`` if it asks for it) and then
    queues ``later(body, respond)`` on ``background``; Bolt sends the ack as soon as this returns."""
    wants_body = "body" in inspect.signature(ack_fn).parameters

    def listener(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        if wants_body:
            ack_fn(ack=ack, body=body)
        else:
            ack_fn(ack=ack)
        background.submit(later, body, respond)

    listener.__name__ = listener.__qualname__ = f"{ack_fn.__name__}_then_{getattr(later, '__name__', 'later')}"
    return listener


def _well_formed(body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse | None:
    """Refuse bodies a listener would choke on (HTTP bodies are checked earlier; Socket Mode ones here)."""
    try:
        check(body)
    except MalformedRequest as exc:
        log.warning("refused a malformed Slack request: %s", exc)
        return BoltResponse(status=400, body={"error": str(exc)})
    return next()


def _ack_event(ack: Ack) -> None:
    ack()


def _logged(handler: Callable[[SlackDeps, dict[str, Any]], None], deps: SlackDeps, body: dict[str, Any]) -> None:
    try:
        handler(deps, body.get("event") or {})
    except Exception:
        log.exception("%s failed", handler.__name__)
