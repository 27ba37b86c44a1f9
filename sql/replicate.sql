-- Replicate the database this sqlite3 shell opened: load, configure, start, write, sync, stop.
-- Run as `sqlite3 -bail DB < replicate.sql` after filling the placeholders (the tests do it in
-- tests/integration/harness.py, scripts/demo.sh in bash):
--   @EXT@              the extension without suffix, e.g. /repo/target/release/liblitestream
--   @CONFIG@           SELECT litestream_configure('key', 'value'); ...
--   @WORKLOAD@         the application's writes (SQL and/or `.read FILE` lines)
--   @SYNC_TIMEOUT_MS@  how long litestream_sync() may wait for the replica
-- Every result the tests read is printed as `name=value` (loaded= proves the .load worked).
.bail on
.load "@EXT@"
SELECT 'loaded=' || litestream_version();
PRAGMA journal_mode=WAL;
@CONFIG@
SELECT 'start=' || litestream_start();
@WORKLOAD@
SELECT 'sync=' || litestream_sync(@SYNC_TIMEOUT_MS@);
SELECT 'status=' || litestream_status();
SELECT 'stop=' || litestream_stop();
