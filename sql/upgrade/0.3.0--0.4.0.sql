-- Before 0.4.0's incremental and idempotent parts: drop what they replace.
DROP FUNCTION IF EXISTS imgembed.model_lock_key(text);  -- 0.3.0 only
DROP FUNCTION IF EXISTS imgembed.check_model_grant(text, text);  -- 0.2.0 on
