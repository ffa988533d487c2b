-- Before 0.2.0's incremental and idempotent parts: drop what they recreate with another signature
-- or other columns (CREATE OR REPLACE cannot change those).
DROP FUNCTION imgembed.load_model(text, bytea, jsonb, boolean);
DROP FUNCTION imgembed.record_error(text, jsonb, text, text, text);
DROP PROCEDURE imgembed.backfill(regclass, name, name, text, integer, text);
DROP VIEW imgembed.vector_lineage;
