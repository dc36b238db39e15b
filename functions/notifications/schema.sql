-- Notifications database. Idempotent DDL: applied by `task migrate` and the local runtime.

-- One row per event that asks for an email. The row is committed (SENDING) before the
-- SMTP conversation and marked SENT after it, so a redelivered event finds it and sends
-- nothing; an SMTP failure deletes it, so Knative's retry sends again.
CREATE TABLE IF NOT EXISTS notifications (
    event_source text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    recipient    text        NOT NULL,
    subject      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('SENDING', 'SENT')),
    message_id   text        NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    PRIMARY KEY (event_source, event_id)
);
