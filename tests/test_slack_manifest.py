"""manifest.yml asks for what the app uses, and nothing it does not."""

from __future__ import annotations

import re

from tests.conftest import ROOT

MANIFEST = (ROOT / "manifest.yml").read_text(encoding="utf-8")


def test_scopes_events_and_command_match_what_the_app_uses():
    scopes = re.findall(r"^\s+- ([a-z:.]+)\s", MANIFEST.split("bot:", 1)[1].split("settings:")[0], re.M)
    assert scopes == ["commands", "chat:write", "im:write", "users:read", "users:read.email", "usergroups:read"]
    events = re.findall(r"^\s+- (\w+)$", MANIFEST.split("bot_events:", 1)[1].split("interactivity:")[0], re.M)
    assert events == ["app_home_opened", "user_change"]
    assert "command: /smime" in MANIFEST and "usage_hint:" in MANIFEST and "should_escape: true" in MANIFEST
    assert "home_tab_enabled: true" in MANIFEST and "socket_mode_enabled: false" in MANIFEST


def test_every_url_is_the_one_placeholder_and_points_at_slack_events():
    urls = re.findall(r"(?:url|request_url): (\S+)", MANIFEST)
    assert len(urls) == 3 and set(urls) == {"https://certportal.example.com/slack/events"}


def test_limits_slack_enforces():
    name = re.search(r"^  name: (.+)$", MANIFEST, re.M).group(1)
    description = re.search(r"^  description: (.+)$", MANIFEST, re.M).group(1)
    display = re.search(r"display_name: (\S+)", MANIFEST).group(1)
    assert len(name) <= 35 and len(description) <= 140 and re.fullmatch(r"[a-z0-9._-]{1,80}", display)
