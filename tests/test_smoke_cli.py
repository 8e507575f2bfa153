"""The quick start through the real command line: issue, show, list, audit verify."""

from __future__ import annotations


def test_issue_then_show_gives_the_certificate(run_cli):
    issued = run_cli("issue", "alice@example.com", check=True)
    assert issued.stdout.startswith("issued alice@example.com serial ")
    shown = run_cli("show", "alice@example.com", "--pem", check=True)
    assert shown.stdout.count("BEGIN CERTIFICATE") == 1
    chain = run_cli("show", "alice@example.com", "--pem", "--chain", check=True)
    assert chain.stdout.count("BEGIN CERTIFICATE") == 3
    assert "status=active" in run_cli("list", check=True).stdout
    assert "intact" in run_cli("audit", "verify", check=True).stdout


def test_mailbox_outside_allowed_domains_is_refused_and_changes_nothing(run_cli):
    refused = run_cli("issue", "mallory@evil.example")
    assert refused.returncode != 0
    assert "outside the allowed domains" in refused.stderr
    assert run_cli("list", check=True).stdout == ""
