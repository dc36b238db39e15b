-- Inventory database. Idempotent DDL: applied by `task migrate` and the local runtime,
-- together with functions/shared/schema.sql (outbox, processed_events).

-- Units free to sell per SKU. A hold takes units out of `available` at once, so
-- "stock never goes negative" is a CHECK the database enforces under any concurrency.
CREATE TABLE IF NOT EXISTS stock (
    sku                 text        PRIMARY KEY CHECK (sku ~ '^[a-z0-9_-]{2,64}$'),
    available           integer     NOT NULL DEFAULT 0 CHECK (available >= 0),
    low_stock_threshold integer     NOT NULL DEFAULT 5 CHECK (low_stock_threshold >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One reservation per order number: HELD when made, COMMITTED once the order is
-- confirmed (com.shop.order.placed), RELEASED when cancelled, compensated or expired.
CREATE TABLE IF NOT EXISTS reservations (
    order_number text        PRIMARY KEY,
    status       text        NOT NULL CHECK (status IN ('HELD', 'COMMITTED', 'RELEASED')),
    -- Digest of the requested lines: a replay with other lines is refused, not merged.
    request_hash text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reservations_held_since ON reservations (created_at) WHERE status = 'HELD';

CREATE TABLE IF NOT EXISTS reservation_lines (
    order_number text    NOT NULL REFERENCES reservations ON DELETE CASCADE,
    sku          text    NOT NULL REFERENCES stock,
    quantity     integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_number, sku)
);
