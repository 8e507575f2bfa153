"""PFX passwords: random, typeable on a phone, no look-alike characters, >= 112 bits by policy."""

from __future__ import annotations

import secrets


def generate_password(length: int, alphabet: str) -> str:
    """A password of ``length`` symbols drawn uniformly from ``alphabet`` with ``secrets``.

    The settings refuse a policy below 112 bits at start-up (S/MIME BR 6.1.2).
    """
    symbols = "".join(sorted(set(alphabet)))
    return "".join(secrets.choice(symbols) for _ in range(length))
