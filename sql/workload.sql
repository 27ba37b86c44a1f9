-- A small application workload, safe to run again on the same database: several transactions
-- that insert, update and delete rows, build an index, and write overflow pages, so the replica
-- sees pages allocated, rewritten and freed.
CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, payload BLOB);
CREATE INDEX IF NOT EXISTS items_name ON items(name);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
INSERT INTO items(name, qty, payload)
  SELECT 'item-' || i || '-' || hex(randomblob(4)), i * 3, randomblob(100 + i % 400) FROM n;
COMMIT;
BEGIN;
UPDATE items SET qty = qty + 1, payload = randomblob(64) WHERE id % 3 = 0;
DELETE FROM items WHERE id % 10 = 0;
COMMIT;
INSERT INTO items(name, qty, payload) VALUES ('big-' || hex(randomblob(4)), -1, randomblob(300000));
UPDATE items SET name = name || '-x' WHERE id % 7 = 0;
DELETE FROM items WHERE qty = -1 AND id < (SELECT max(id) FROM items);
