"""The Slack Web API client: base URL from settings (GovSlack, tests), one retry after a 429's Retry-After."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from pipeline.settings import Settings

TIMEOUT_SECONDS = 10


def build_client(settings: Settings) -> WebClient:
    base_url = settings.slack.api_url.rstrip("/") + "/"
    return WebClient(
        token=settings.secrets.slack_bot_token or None,
        base_url=base_url,
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1), RateLimitErrorRetryHandler(max_retry_count=1)],
    )


def slack_error(exc: Exception) -> str:
    """Slack's error code (``ratelimited``, ``users_not_found``...) or the exception's class name."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or exc.response.status_code)
    return type(exc).__name__


def is_transient(exc: Exception) -> bool:
    """Whether trying the same call later may work (rate limits, Slack outages, network trouble)."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        return status == 429 or status >= 500 or exc.response.get("error") in ("ratelimited", "service_unavailable")
    return isinstance(exc, OSError)
