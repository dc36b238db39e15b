-- Eventing database: events that exhausted their delivery retries. Idempotent DDL.

CREATE TABLE IF NOT EXISTS dead_letters (
    id                bigserial   PRIMARY KEY,
    event_id          text        NOT NULL,
    event_source      text        NOT NULL,
    event_type        text        NOT NULL,
    subject           text,
    event             jsonb       NOT NULL,  -- structured CloudEvent, error extensions removed
    error_destination text        NOT NULL,  -- knativeerrordest: where delivery failed
    error_code        integer,               -- knativeerrorcode: the last HTTP status (0: no answer)
    error_data        text,                  -- knativeerrordata, decoded
    received_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz,
    replay_status     integer,
    -- A dead letter delivered twice is kept once.
    UNIQUE (event_source, event_id, error_destination)
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at DESC);
