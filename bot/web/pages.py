"""The link pages: plain, accessible HTML that works without JavaScript (except the copy button).

Styles and the one script are inline and allowed by hash in a strict Content
Security Policy, so the pages load nothing from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from html import escape

from pipeline.links import LinkState, LinkView

CSS = (
    "body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:2rem 1rem;background:#f6f6f6;color:#1d1d1d}"
    "main{max-width:36rem;margin:0 auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;"
    "border:1px solid #ddd}h1{font-size:1.4rem;margin-top:0}"
    "button{font:inherit;font-weight:600;padding:.6rem 1.2rem;border-radius:6px;border:2px solid #1d4ed8;"
    "background:#1d4ed8;color:#fff;cursor:pointer}button:focus{outline:3px solid #f59e0b;outline-offset:2px}"
    ".secret{font-family:ui-monospace,monospace;font-size:1.3rem;letter-spacing:.05em;padding:.5rem;"
    "border:1px solid #999;border-radius:4px;width:100%;box-sizing:border-box;background:#fafafa}"
    ".note{color:#444;font-size:.95rem}"
)
COPY_SCRIPT = (
    "var b=document.getElementById('copy'),f=document.getElementById('secret'),s=document.getElementById('status');"
    "if(b&&f&&navigator.clipboard){b.hidden=false;b.addEventListener('click',function(){"
    "navigator.clipboard.writeText(f.value).then(function(){s.textContent='Copied to the clipboard.';},"
    "function(){f.select();s.textContent='Select the password and copy it.';});});}"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; style-src {_sha256(CSS)}; script-src {_sha256(COPY_SCRIPT)}; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
NEW_LINK_HOW = (
    "To get a new link, click the button in your CertPortal message in Slack again, "
    "or type <code>/smime password</code> or <code>/smime download</code>."
)


def _page(title: str, body: str, *, script: bool = False) -> str:
    tail = f"<script>{COPY_SCRIPT}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{escape(title)} - CertPortal</title><style>{CSS}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main>{tail}</body></html>"
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "soon"


def confirm(view: LinkView, *, csrf: str) -> str:
    """What the link is for, and one button that releases it. Showing this page uses nothing."""
    if view.kind == "password":
        title, what, action = "Your certificate password", "the password of the S/MIME certificate", "Show my password"
    else:
        title, what, action = "Your certificate file", "the S/MIME certificate file (PFX)", "Download certificate"
    body = (
        f"<p>This one-time link gives you {what} for <strong>{escape(view.mailbox)}</strong> "
        f"(serial <code>{escape(view.serial)}</code>).</p>"
        f"<p>It works once and expires at <strong>{_when(view.expires_at)}</strong>. "
        "Opening this page has not used it.</p>"
        '<form method="post">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit">{action}</button></form>'
        '<p class="note">Nobody from IT will ever ask you for this password.</p>'
    )
    return _page(title, body)


def password(*, mailbox: str, secret: str) -> str:
    body = (
        f"<p>The password of the S/MIME certificate for <strong>{escape(mailbox)}</strong>. "
        "You need it once, when you install the certificate file.</p>"
        '<p><label for="secret">Password</label><br>'
        f'<input id="secret" class="secret" type="text" readonly value="{escape(secret)}" '
        'autocomplete="off" spellcheck="false"></p>'
        '<p><button type="button" id="copy" hidden>Copy password</button> '
        '<span id="status" role="status" aria-live="polite"></span></p>'
        '<p class="note">This link has now been used; this page will not show the password again. '
        "Close it when you are done.</p>"
    )
    return _page("Your certificate password", body, script=True)


def unavailable(state: LinkState) -> str:
    reason = {
        LinkState.USED: ("Link already used", "This link has already been used. Each link works only once."),
        LinkState.EXPIRED: ("Link expired", "This link has expired. Links work for a few minutes only."),
        LinkState.REVOKED: (
            "Certificate revoked",
            "This certificate has been revoked, so its password and file are no longer handed out.",
        ),
    }.get(state, ("Link not valid", "This link is not valid. Check that you copied all of it."))
    title, text = reason
    return _page(title, f"<p>{text}</p><p>{NEW_LINK_HOW}</p>")


def refused() -> str:
    return _page(
        "Request not accepted",
        "<p>This form could not be verified, so nothing was released. Open the link again from Slack.</p>"
        f"<p>{NEW_LINK_HOW}</p>",
    )


def too_many() -> str:
    return _page("Too many attempts", "<p>Too many invalid links were tried from your network. Wait a minute.</p>")


def vault_down() -> str:
    return _page(
        "Try again in a minute",
        "<p>The secret could not be fetched right now. The link has not been used: reload this page in a "
        "minute and try again.</p>",
    )
