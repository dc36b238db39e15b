-- The statements inventory-reserve runs for a one-line reservation (functions/inventory/store.py),
-- for pgbench: the raw-SQL ceiling the function is compared with.
\set sku random(0, 99)
\set n random(1, 2000000000)
BEGIN;
INSERT INTO reservations (order_number, status, request_hash)
  VALUES ('PGB-' || :client_id || '-' || :n, 'HELD', 'pgbench') ON CONFLICT DO NOTHING RETURNING created_at;
SELECT sku, available, low_stock_threshold FROM stock
  WHERE sku = ANY(ARRAY['bench_' || :sku]) ORDER BY sku FOR UPDATE;
UPDATE stock s SET available = s.available + d.delta, updated_at = now()
  FROM unnest(ARRAY['bench_' || :sku], ARRAY[-1]) AS d(sku, delta) WHERE s.sku = d.sku;
INSERT INTO reservation_lines (order_number, sku, quantity)
  SELECT 'PGB-' || :client_id || '-' || :n, sku, quantity FROM unnest(ARRAY['bench_' || :sku], ARRAY[1]) AS l(sku, quantity)
  ON CONFLICT DO NOTHING;
COMMIT;
