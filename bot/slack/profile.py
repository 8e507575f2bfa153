"""Who is asking: the Slack profile (``users.info``) and whether policy lets that account have a certificate.

The mailbox always comes from the profile, never from text the user typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient

from pipeline.errors import PolicyError
from pipeline.requests import normalize_mailbox
from pipeline.settings import PolicySettings


@dataclass(frozen=True)
class SlackProfile:
    user_id: str
    email: str
    first_name: str = ""
    last_name: str = ""
    is_bot: bool = False
    is_guest: bool = False  # multi-channel (restricted) or single-channel (ultra restricted) guest
    deleted: bool = False


def from_user(user: dict[str, Any]) -> SlackProfile:
    """Build a profile from the ``user`` object of ``users.info``."""
    profile = user.get("profile") or {}
    first = profile.get("first_name") or ""
    last = profile.get("last_name") or ""
    if not first and not last:
        # Workspaces without split names only have real_name.
        first, _, last = (profile.get("real_name") or user.get("real_name") or "").strip().partition(" ")
    return SlackProfile(
        user_id=str(user.get("id") or ""),
        email=str(profile.get("email") or ""),
        first_name=first.strip(),
        last_name=last.strip(),
        is_bot=bool(user.get("is_bot")) or bool(user.get("is_app_user")),
        is_guest=bool(user.get("is_restricted")) or bool(user.get("is_ultra_restricted")),
        deleted=bool(user.get("deleted")),
    )


def fetch_profile(client: WebClient, user_id: str) -> SlackProfile:
    """``users.info`` for ``user_id``. Raises slack_sdk's SlackApiError."""
    response = client.users_info(user=user_id)
    return from_user(response["user"])


def mailbox_for(profile: SlackProfile, policy: PolicySettings) -> str:
    """The mailbox this account may hold a certificate for. Raises PolicyError with a sentence for the user."""
    if profile.deleted and not policy.allow_deactivated:
        raise PolicyError("This Slack account is deactivated, so it cannot hold a certificate.")
    if profile.is_bot and not policy.allow_bots:
        raise PolicyError("Bots and apps cannot request S/MIME certificates.")
    if profile.is_guest and not policy.allow_guests:
        raise PolicyError(
            "Guest accounts cannot request S/MIME certificates; certificates are for the organisation's own staff."
        )
    if not profile.email:
        raise PolicyError("Your Slack profile has no email address, so there is no mailbox to certify. Ask IT.")
    try:
        return normalize_mailbox(policy, profile.email)
    except PolicyError:
        domains = ", ".join(policy.allowed_domains)
        raise PolicyError(
            f"Your Slack email {profile.email} is not in a domain CertPortal issues for ({domains}). "
            "Certificates are only issued for the organisation's own mailboxes."
        ) from None
