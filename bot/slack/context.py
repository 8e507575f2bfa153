"""What every Slack handler shares, and the wrapper that runs the slow half of a handler after the ack.

Handlers are split in two: an ack function that answers Slack at once without
any network call, and a slow half (run on a background pool after the ack) that reads the
profile, writes to the store and replies. ``lazy`` turns ``handler(ctx)`` into
such a function and turns refusals into a plain sentence for the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack import blocks
from bot.slack.approvers import Approvers
from bot.slack.client import slack_error
from bot.slack.notifier import SlackNotifier
from bot.slack.profile import SlackProfile, fetch_profile, mailbox_for
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError, NotFound, PolicyError

log = logging.getLogger("certportal.slack")
SORRY = "Something went wrong on our side and nothing was changed. Please try again in a minute."


@dataclass
class SlackDeps:
    p: Pipeline
    client: WebClient
    notifier: SlackNotifier
    approvers: Approvers

    def link_url(self, token: str) -> str:
        return f"{self.p.settings.web.public_url.rstrip('/')}/links/{token}"


@dataclass
class Ctx:
    deps: SlackDeps
    body: dict[str, Any]
    respond: Respond
    _profile: SlackProfile | None = field(default=None, repr=False)

    @property
    def p(self) -> Pipeline:
        return self.deps.p

    @property
    def client(self) -> WebClient:
        return self.deps.client

    @property
    def user_id(self) -> str:
        user = self.body.get("user")
        return str(user.get("id") if isinstance(user, dict) else self.body.get("user_id") or "")

    @property
    def trigger_id(self) -> str:
        return str(self.body.get("trigger_id") or "")

    def profile(self) -> SlackProfile:
        if self._profile is None:
            self._profile = fetch_profile(self.client, self.user_id)
        return self._profile

    def mailbox(self) -> str:
        """The caller's own mailbox from their Slack profile. Raises PolicyError when policy refuses the account."""
        return mailbox_for(self.profile(), self.p.settings.policy)

    def reply(self, text: str, body: list[Block] | None = None) -> None:
        """Tell only the person who acted: an ephemeral message, or a modal where there is no response_url."""
        body = body or [blocks.section(text)]
        if self.body.get("response_url"):
            self.respond(
                text=text,
                blocks=body,
                response_type="ephemeral",
                replace_original=False,
                unfurl_links=False,
                unfurl_media=False,
            )
        elif self.trigger_id:
            self.open_modal(View(type="modal", title="CertPortal", close="Close", blocks=body))
        else:
            self.deps.notifier.dm(self.user_id, text, body)

    def open_modal(self, view: View) -> None:
        self.client.views_open(trigger_id=self.trigger_id, view=view)


Handler = Callable[[Ctx], None]


def lazy(deps: SlackDeps, handler: Handler) -> Callable[..., None]:
    """The slow half of a listener: ``handler`` run with refusals reported to the user in plain words."""

    def run(body: dict[str, Any], respond: Respond) -> None:
        ctx = Ctx(deps, body, respond)
        try:
            handler(ctx)
        except (PolicyError, NotFound) as exc:
            _safe_reply(ctx, str(exc))
        except (SlackApiError, OSError) as exc:
            log.warning("%s: Slack call failed: %s", handler.__name__, slack_error(exc))
            _safe_reply(ctx, SORRY)
        except CertPortalError as exc:
            log.warning("%s: %s: %s", handler.__name__, type(exc).__name__, exc)
            _safe_reply(ctx, SORRY)
        except Exception:
            log.exception("%s failed", handler.__name__)
            _safe_reply(ctx, SORRY)

    run.__name__ = run.__qualname__ = f"lazy_{handler.__name__}"
    return run


def _safe_reply(ctx: Ctx, text: str) -> None:
    try:
        ctx.reply(text)
    except Exception as exc:  # the user is unreachable; the log has the story
        log.warning("could not tell %s: %s", ctx.user_id, slack_error(exc))
