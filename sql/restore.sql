-- Restore a replica into a new database file with litestream_restore().
-- Run as `sqlite3 -bail HOST_DB < restore.sql` (HOST_DB may be :memory: when a URL is given):
--   @EXT@     the extension without suffix
--   @CONFIG@  litestream_configure() statements for HOST_DB's replica (may be empty)
--   @ARGS@    litestream_restore()'s arguments: 'out.db' [, '{"url": "s3://...", "overwrite": true}']
.bail on
.load "@EXT@"
SELECT 'loaded=' || litestream_version();
@CONFIG@
SELECT 'restored=' || litestream_restore(@ARGS@);
