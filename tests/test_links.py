"""One-time links in the domain: hashed tokens, no consumption on lookup, exactly one release, revocation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from pipeline.certificates import current_certificate, revoke_certificate
from pipeline.clock import iso
from pipeline.drive import run_until_settled
from pipeline.errors import PolicyError, RetryLater
from pipeline.links import (
    FailedLookupLimiter,
    LinkRefused,
    LinkState,
    create_link,
    csrf_token,
    inspect,
    release,
    token_hash,
)
from pipeline.ports import RevocationReason
from pipeline.requests import create_request


@pytest.fixture
def cert(pipeline):
    request = create_request(pipeline, mailbox="alice@example.com", requested_by="test", approved=True)
    assert run_until_settled(pipeline, [request["id"]], timeout=60)[request["id"]] == "issued"
    return current_certificate(pipeline, "alice@example.com")


def secret_of(p, cert):
    return p.vault.retrieve(ref=cert["vault_ref"], reason="test")


def test_tokens_are_256_bit_and_only_their_hash_is_stored(pipeline, cert):
    token, expires = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    assert len(token) == 43 and expires - pipeline.clock.now() <= timedelta(minutes=10)
    rows = pipeline.store.all("SELECT * FROM links")
    assert rows[0]["token_sha256"] == token_hash(token)
    dump = "\n".join(pipeline.store.conn.iterdump())
    assert token not in dump
    entry = [e for e in pipeline.audit.entries() if e["action"] == "link.created"][-1]
    assert entry["detail"]["serial"] == cert["serial"] and token not in str(entry)


def test_lookups_consume_nothing_and_release_happens_once(pipeline, cert):
    token, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    for _ in range(5):
        assert inspect(pipeline, token).state is LinkState.VALID
    released = release(pipeline, token=token, csrf=csrf_token(pipeline, token), client="10.0.0.1")
    assert released.password == secret_of(pipeline, cert).password
    assert inspect(pipeline, token).state is LinkState.USED
    with pytest.raises(LinkRefused) as refused:
        release(pipeline, token=token, csrf=csrf_token(pipeline, token))
    assert refused.value.state is LinkState.USED
    reveal = [e for e in pipeline.audit.entries() if e["action"] == "link.revealed"]
    assert len(reveal) == 1 and reveal[0]["detail"] == {"serial": cert["serial"], "owner": "U1"}
    assert reveal[0]["origin"] == "10.0.0.1"


def test_concurrent_releases_hand_the_secret_out_once(pipeline, cert):
    token, _ = create_link(pipeline, kind="pfx", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    csrf = csrf_token(pipeline, token)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            release(pipeline, token=token, csrf=csrf)
            outcomes.append("released")
        except LinkRefused as exc:
            outcomes.append(str(exc.state))
        finally:
            pipeline.store.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("released") == 1 and outcomes.count("used") == 7
    assert len([e for e in pipeline.audit.entries() if e["action"] == "link.downloaded"]) == 1


def test_a_wrong_csrf_token_releases_nothing_and_leaves_the_link_usable(pipeline, cert):
    token, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    other, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    for csrf in ("", "0" * 64, csrf_token(pipeline, other)):
        with pytest.raises(LinkRefused) as refused:
            release(pipeline, token=token, csrf=csrf)
        assert refused.value.state == "forged"
    assert inspect(pipeline, token).state is LinkState.VALID


def test_expired_and_unknown_links_are_refused(pipeline, cert):
    token, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    with pipeline.store.write() as conn:
        conn.execute("UPDATE links SET expires_at = ?", (iso(pipeline.clock.now() - timedelta(seconds=1)),))
    assert inspect(pipeline, token).state is LinkState.EXPIRED
    with pytest.raises(LinkRefused):
        release(pipeline, token=token, csrf=csrf_token(pipeline, token))
    assert inspect(pipeline, "x" * 43).state is LinkState.UNKNOWN
    assert inspect(pipeline, "../../etc/passwd").state is LinkState.UNKNOWN


def test_a_revoked_certificate_hands_out_nothing(pipeline, cert):
    token, _ = create_link(pipeline, kind="pfx", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    revoke_certificate(pipeline, serial=cert["serial"], reason=RevocationReason.KEY_COMPROMISE, actor="test")
    assert inspect(pipeline, token).state in (LinkState.REVOKED, LinkState.EXPIRED)
    with pytest.raises(LinkRefused):
        release(pipeline, token=token, csrf=csrf_token(pipeline, token))
    with pytest.raises(PolicyError):
        create_link(pipeline, kind="pfx", serial=cert["serial"], owner_slack_id="U1", actor="U1")


def test_revoked_status_alone_stops_a_link(pipeline, cert):
    token, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    with pipeline.store.write() as conn:
        conn.execute("UPDATE certificates SET status = 'revoked'")
    assert inspect(pipeline, token).state is LinkState.REVOKED


def test_a_vault_outage_does_not_burn_the_link(pipeline, cert, monkeypatch):
    token, _ = create_link(pipeline, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")

    def down(**kwargs):
        raise RetryLater("vault unreachable")

    monkeypatch.setattr(pipeline.vault, "retrieve", down)
    with pytest.raises(RetryLater):
        release(pipeline, token=token, csrf=csrf_token(pipeline, token))
    assert inspect(pipeline, token).state is LinkState.VALID


def test_failed_lookups_are_bounded_per_client():
    now = [1000.0]
    limiter = FailedLookupLimiter(3, max_clients=2, now=lambda: now[0])
    for _ in range(3):
        assert limiter.blocked("a") == 0
        limiter.failed("a")
    assert limiter.blocked("a") == pytest.approx(60.0)
    assert limiter.blocked("b") == 0
    now[0] += 30
    assert limiter.blocked("a") == pytest.approx(30.0)
    now[0] += 30.5
    assert limiter.blocked("a") == 0
    limiter.failed("b")
    limiter.failed("c")  # evicts the least recently seen client
    assert "a" not in limiter._failures and len(limiter._failures) == 2
