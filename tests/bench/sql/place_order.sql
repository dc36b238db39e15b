-- The transaction order-place commits for a one-line order (functions/orders/store.py): order,
-- line, outbox row with the CloudEvent. For pgbench: the raw-SQL ceiling order-place is compared with.
\set sku random(0, 99)
\set n random(1, 2000000000)
BEGIN;
INSERT INTO orders (order_number, customer_id, email, first_name, last_name, status, total, currency, placed_at)
  VALUES ('PGB-' || :client_id || '-' || :n, 'bench-customer', 'bench@example.com', 'Bench', 'Mark', 'PLACED',
          25.00, 'USD', now());
INSERT INTO order_lines (order_number, line_no, sku, name, quantity, unit_price, line_total)
  VALUES ('PGB-' || :client_id || '-' || :n, 0, 'bench_' || :sku, 'Bench product', 1, 25.00, 25.00);
-- sent_at is set: the row costs what the real one costs to write, but no relay publishes it.
INSERT INTO outbox (event_id, event_type, topic, partition_key, sent_at, event)
  VALUES (gen_random_uuid()::text, 'com.shop.order.placed', 'shop.orders', 'PGB-' || :client_id || '-' || :n, now(),
          jsonb_build_object('specversion', '1.0', 'type', 'com.shop.order.placed', 'source', '/shop/orders',
            'id', gen_random_uuid()::text, 'subject', 'PGB-' || :client_id || '-' || :n, 'time', now(),
            'datacontenttype', 'application/json', 'partitionkey', 'PGB-' || :client_id || '-' || :n,
            'dataschema', 'https://shop.example/eventing/schemas/com.shop.order.placed.json',
            'data', jsonb_build_object('orderNumber', 'PGB-' || :client_id || '-' || :n,
              'email', 'bench@example.com', 'firstName', 'Bench', 'lastName', 'Mark', 'total', '25.00',
              'currency', 'USD', 'placedAt', now(),
              'items', jsonb_build_array(jsonb_build_object('skuCode', 'bench_' || :sku, 'name', 'Bench product',
                'quantity', 1, 'unitPrice', '25.00', 'lineTotal', '25.00')))));
COMMIT;
