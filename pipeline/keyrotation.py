"""Re-encrypt every locally stored secret under the first master key."""

from __future__ import annotations

from pipeline.context import Pipeline


def rotate_all(p: Pipeline) -> dict[str, int]:
    """Rotate work-store secrets and any backend that keeps secrets under the master keys."""
    counts = {"work secrets": 0}
    rows = p.store.all("SELECT request_id, password_enc, key_enc, pfx_enc FROM work")
    with p.store.write() as conn:
        for row in rows:
            values = {c: p.box.rotate(row[c]) if row[c] else None for c in ("password_enc", "key_enc", "pfx_enc")}
            conn.execute(
                "UPDATE work SET password_enc = ?, key_enc = ?, pfx_enc = ? WHERE request_id = ?",
                (values["password_enc"], values["key_enc"], values["pfx_enc"], row["request_id"]),
            )
            counts["work secrets"] += sum(1 for v in values.values() if v)
    for name, backend in (("CA keys", getattr(p.ca, "state", None)), ("vault entries", p.vault)):
        rotate = getattr(backend, "rotate_keys", None)
        if rotate is not None:
            counts[name] = rotate(p.box)
    return counts
