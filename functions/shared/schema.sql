-- Tables every PostgreSQL domain database has: the transactional outbox and the
-- record of consumed events. Idempotent: applied by `task migrate` and the local runtime.

CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial PRIMARY KEY,
    event_id      text        NOT NULL UNIQUE,
    event_type    text        NOT NULL,
    topic         text        NOT NULL,
    partition_key text        NOT NULL,   -- becomes the Kafka key
    event         jsonb       NOT NULL,   -- structured-mode CloudEvent
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- At-least-once delivery: a consumer records (source, id) in the same transaction as
-- its effect, and skips an event it has already recorded.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source, event_id)
);
