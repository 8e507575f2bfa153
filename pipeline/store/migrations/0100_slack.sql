-- Every Slack message that asks approvers to decide a request, so each copy can
-- be rewritten (chat.update) once the request is decided, cancelled or expired.
CREATE TABLE approval_messages (
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (channel, ts)
);
CREATE INDEX approval_messages_request ON approval_messages (request_id);

