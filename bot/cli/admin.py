"""Admin commands: issue, list, show, export, revoke, publish, reconcile."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bot.cli.common import actor, fail, state
from pipeline.certificates import certificate, current_certificate, publish_certificate, revoke_certificate
from pipeline.drive import run_until_settled
from pipeline.lifecycle.views import expiring_within, parse_window
from pipeline.ports import RevocationReason
from pipeline.requests import create_request, get_request, normalize_mailbox
from pipeline.settings import KEY_TYPES, REVOCATION_REASONS


@click.command()
@click.argument("mailbox")
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default=None, help="Key type (default from settings).")
@click.option("--first-name", default="", help="Given name, for CAs and products that need it.")
@click.option("--last-name", default="", help="Surname, for CAs and products that need it.")
@click.option("--reason", default="", help="Why, for the audit.")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for issuance.")
def issue(mailbox: str, key_type: str | None, first_name: str, last_name: str, reason: str, timeout: float) -> None:
    """Issue a certificate for MAILBOX now (an approved request run to the end)."""
    p = state().pipeline
    who = actor()
    request = create_request(
        p,
        mailbox=mailbox,
        requested_by=who,
        key_type=key_type,
        reason=reason,
        first_name=first_name,
        last_name=last_name,
        approved=True,
        approver=who,
    )
    finish(request["id"], timeout)


def finish(request_id: str, timeout: float) -> None:
    """Drive a request to its end and report it; exits non-zero unless it was issued."""
    p = state().pipeline
    outcome = run_until_settled(p, [request_id], timeout=timeout)[request_id]
    request = get_request(p, request_id)
    if outcome == "issued":
        cert = current_certificate(p, request["mailbox"])
        assert cert is not None
        click.echo(f"issued {request['mailbox']} serial {cert['serial']} expires {cert['not_after'][:10]}")
        return
    if outcome == "parked":
        fail(f"request {request_id} needs an admin: {request['admin_detail']}", 3)
    if outcome in ("failed", "denied", "cancelled", "expired"):
        fail(f"{request['mailbox']}: {request['failure_reason'] or outcome} ({request['admin_detail'] or outcome})")
    fail(f"request {request_id} is still {outcome}; the worker will finish it (see `certportal list`)", 3)


@click.command(name="list")
@click.option(
    "--expiring-within",
    "expiring_within_",
    metavar="DURATION",
    default=None,
    help="Only current certificates expiring within DURATION (e.g. 30d, 2w, 12h), soonest first.",
)
def list_(expiring_within_: str | None) -> None:
    """Certificates and open or failed requests, one line each."""
    p = state().pipeline
    if expiring_within_ is not None:
        window = parse_window(expiring_within_)
        certs = expiring_within(p, p.clock.now(), window)
    else:
        certs = p.store.all("SELECT * FROM certificates ORDER BY mailbox, not_after")
    for c in certs:
        click.echo(
            f"certificate {c['mailbox']} serial={c['serial']} status={c['status']} "
            f"expires={c['not_after'][:10]} key={c['key_type']} ca={c['ca_backend']} "
            f"directory={c['publish_state']}"
        )
    if expiring_within_ is not None:
        return
    for r in p.store.all("SELECT * FROM requests WHERE state != 'issued' ORDER BY created_at"):
        why = f" reason={r['failure_reason']!r}" if r["failure_reason"] else ""
        click.echo(
            f"request {r['mailbox']} id={r['id']} kind={r['kind']} state={r['state']} "
            f"created={r['created_at'][:19]}{why}"
        )


@click.command()
@click.argument("mailbox")
@click.option("--pem", is_flag=True, required=True, help="Print PEM (the only format).")
@click.option("--chain", is_flag=True, help="Follow with the issuing CA(s) up to the root.")
def show(mailbox: str, pem: bool, chain: bool) -> None:
    """Print MAILBOX's current certificate."""
    p = state().pipeline
    cert = current_certificate(p, normalize_mailbox(p.settings.policy, mailbox))
    if cert is None:
        fail(f"{mailbox} has no current certificate")
        return
    click.echo(cert["cert_pem"].strip())
    if chain and cert["chain_pem"]:
        click.echo(cert["chain_pem"].strip())


@click.command()
@click.argument("mailbox")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Directory to write into.")
@click.option("--reason", default=None, help="Why the key is recovered (required, audited).")
@click.option("--serial", default=None, help="An older certificate's serial (hex).")
@click.option("--all", "everything", is_flag=True, help="Every kept certificate of MAILBOX.")
def export(mailbox: str, out_dir: str, reason: str | None, serial: str | None, everything: bool) -> None:
    """Key recovery: write PFX and password files (mode 0600) for MAILBOX."""
    if not reason or not reason.strip():
        fail("--reason is required: every key recovery is audited with its reason", 2)
        return
    if serial and everything:
        fail("give --serial or --all, not both", 2)
    p = state().pipeline
    mailbox = normalize_mailbox(p.settings.policy, mailbox)
    if everything:
        certs = p.store.all("SELECT * FROM certificates WHERE mailbox = ? ORDER BY not_after", (mailbox,))
    elif serial:
        certs = [certificate(p, serial)]
    else:
        current = current_certificate(p, mailbox)
        certs = [current] if current else []
    if not certs or any(c["mailbox"] != mailbox for c in certs):
        fail(f"no such certificate for {mailbox}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for c in certs:
        secret = p.vault.retrieve(ref=c["vault_ref"], reason=f"export by {actor()}: {reason}")
        base = f"{mailbox}-{c['serial']}"
        _write_private(out / f"{base}.pfx", secret.pfx)
        _write_private(out / f"{base}.txt", (secret.password + "\n").encode())
        p.audit.record(
            actor=actor(),
            action="certificate.exported",
            subject=mailbox,
            origin="cli",
            serial=c["serial"],
            reason=reason.strip()[:300],
        )
        click.echo(f"wrote {base}.pfx and {base}.txt")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


@click.command()
@click.argument("mailbox")
@click.option("--reason", type=click.Choice(REVOCATION_REASONS), required=True)
@click.option("--all", "everything", is_flag=True, help="Every unexpired certificate, not just the current one.")
def revoke(mailbox: str, reason: str, everything: bool) -> None:
    """Revoke MAILBOX's current certificate at the CA at once."""
    p = state().pipeline
    mailbox = normalize_mailbox(p.settings.policy, mailbox)
    now = p.clock.now().isoformat()
    if everything:
        certs = p.store.all(
            "SELECT * FROM certificates WHERE mailbox = ? AND status IN ('active', 'superseded') AND not_after > ?",
            (mailbox, now),
        )
    else:
        current = current_certificate(p, mailbox)
        certs = [current] if current else []
    if not certs:
        fail(f"{mailbox} has no certificate to revoke")
    for c in certs:
        revoke_certificate(p, serial=c["serial"], reason=RevocationReason(reason), actor=actor(), origin="cli")
        click.echo(f"revoked {mailbox} serial {c['serial']} ({reason})")


@click.command()
@click.argument("mailbox")
def publish(mailbox: str) -> None:
    """Publish MAILBOX's current certificate to the directory now."""
    p = state().pipeline
    cert = current_certificate(p, normalize_mailbox(p.settings.policy, mailbox))
    if cert is None:
        fail(f"{mailbox} has no current certificate")
        return
    publish_certificate(p, serial=cert["serial"], background_on_failure=False)
    click.echo(f"published {cert['mailbox']} serial {cert['serial']} to {p.directory.name}")


COMMANDS = [issue, list_, show, export, revoke, publish]
