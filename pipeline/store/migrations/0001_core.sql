-- Requests: who asked, for which mailbox, and where the request stands.
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'new',            -- new | renew
    mailbox TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    slack_user_id TEXT NOT NULL DEFAULT '',      -- the requester / owner, '' when unknown (CLI)
    requested_by TEXT NOT NULL,                  -- actor: Slack user id or cli:<login>
    reason TEXT NOT NULL DEFAULT '',
    key_type TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'cli',          -- slack | cli | bulk | scheduler
    state TEXT NOT NULL,                         -- pending_approval | approved | provisioning | issued | failed | denied | expired | cancelled
    predecessor_serial TEXT,
    approver TEXT,
    decided_at TEXT,
    decision_note TEXT NOT NULL DEFAULT '',
    expires_at TEXT,                             -- deadline while pending_approval
    failure_reason TEXT NOT NULL DEFAULT '',     -- plain words for the employee
    admin_detail TEXT NOT NULL DEFAULT '',       -- what admins need (vendor messages); never a secret
    approvals_channel TEXT NOT NULL DEFAULT '',
    approvals_ts TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX requests_mailbox ON requests (mailbox, state);
CREATE INDEX requests_state_expiry ON requests (state, expires_at);
CREATE INDEX requests_slack_user ON requests (slack_user_id, state);
-- At most one open request per mailbox: a double click, a bulk re-run or two
-- processes racing cannot create a duplicate.
CREATE UNIQUE INDEX requests_one_open ON requests (mailbox)
    WHERE state IN ('pending_approval', 'approved', 'provisioning');

-- The queue. Rows are never deleted on dequeue: a claim sets a lease, and an
-- expired lease makes the job claimable again.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'provision',      -- provision | publish | cancel | revoke
    payload TEXT NOT NULL DEFAULT '{}',          -- JSON arguments of non-provision kinds (never secrets)
    state TEXT NOT NULL DEFAULT 'queued',        -- queued | running | done | failed | parked
    step TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,         -- failures so far (drives backoff)
    claims INTEGER NOT NULL DEFAULT 0,
    run_after TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires TEXT,
    last_error TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (request_id, kind)
);
CREATE INDEX jobs_ready ON jobs (state, run_after);

-- Per-request working data for the state machine. Secrets are Fernet
-- ciphertext from the moment they exist and are wiped after the vault write
-- is read back and verified.
CREATE TABLE work (
    request_id TEXT PRIMARY KEY,
    password_enc BLOB,
    key_enc BLOB,
    csr_pem TEXT,
    order_intent_at TEXT,
    order_id TEXT,
    polls INTEGER NOT NULL DEFAULT 0,
    awaiting_validation_since TEXT,
    validation_reminded_at TEXT,
    cert_pem TEXT,
    chain_pem TEXT,
    ca_detail TEXT NOT NULL DEFAULT '',          -- what the CA said at issuance (e.g. waived lint findings)
    lint_findings TEXT NOT NULL DEFAULT '',
    pfx_enc BLOB,
    vault_ref TEXT,
    serial TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,                     -- lowercase hex
    request_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    slack_user_id TEXT NOT NULL DEFAULT '',
    key_type TEXT NOT NULL,
    issuer TEXT NOT NULL,
    ca_backend TEXT NOT NULL,
    order_id TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,                 -- fingerprint of the DER, lowercase hex
    cert_pem TEXT NOT NULL,
    chain_pem TEXT NOT NULL DEFAULT '',
    vault_backend TEXT NOT NULL,
    vault_ref TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',       -- active | superseded | revoked | expired
    superseded_by TEXT,
    revoked_at TEXT,
    revocation_reason TEXT,
    publish_state TEXT NOT NULL DEFAULT 'pending', -- pending | published | failed | removed | skipped
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX certificates_mailbox ON certificates (mailbox, status);
CREATE INDEX certificates_expiry ON certificates (status, not_after);
CREATE INDEX certificates_slack_user ON certificates (slack_user_id, status);

-- Reminders already recorded, one row per (certificate, threshold). ``sent``
-- is 1 for the one that produced a DM, 0 for thresholds folded into it.
CREATE TABLE reminders (
    serial TEXT NOT NULL,
    threshold_days INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (serial, threshold_days)
);

-- One-time links: only the SHA-256 of the token is stored.
CREATE TABLE links (
    token_sha256 TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                          -- password | pfx
    serial TEXT NOT NULL,
    owner_slack_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX links_serial ON links (serial);

-- Append-only audit, chained with a MAC keyed from the master key.
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    origin TEXT NOT NULL DEFAULT '',
    key_id TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;

-- Named leases (one scheduler at a time across processes).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
