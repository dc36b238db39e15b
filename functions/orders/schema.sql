-- Orders database. Idempotent DDL: applied by `task migrate` and the local runtime,
-- together with functions/shared/schema.sql (outbox, processed_events).

CREATE TABLE IF NOT EXISTS orders (
    order_number  text          PRIMARY KEY,
    customer_id   text          NOT NULL,   -- the identity's subject (Keycloak user id)
    email         text          NOT NULL,
    first_name    text          NOT NULL,
    last_name     text          NOT NULL,
    status        text          NOT NULL CHECK (status IN ('PLACED', 'CANCELLED')),
    total         numeric(12,2) NOT NULL CHECK (total > 0),
    currency      char(3)       NOT NULL,
    placed_at     timestamptz   NOT NULL DEFAULT now(),
    cancelled_at  timestamptz,
    cancel_reason text
);
-- Contact and shipping address given at checkout (the API's Contact and Address shapes), when given.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS contact jsonb;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS shipping_address jsonb;
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, placed_at DESC);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (placed_at DESC);

CREATE TABLE IF NOT EXISTS order_lines (
    order_number text          NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no      integer       NOT NULL,
    sku          text          NOT NULL,
    name         text          NOT NULL,
    quantity     integer       NOT NULL CHECK (quantity > 0),
    unit_price   numeric(12,2) NOT NULL CHECK (unit_price > 0),
    line_total   numeric(12,2) NOT NULL,
    PRIMARY KEY (order_number, line_no)
);

-- Idempotency-Key: the first request with a key claims it; its 201 answer is stored in
-- the order's own transaction, so a replay gets the same answer and never a second order.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    customer_id   text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    order_number  text,                  -- set once the order committed
    response      jsonb,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);
