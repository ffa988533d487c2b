-- Administration functions are for imgembed_admin, worker functions for imgembed_worker; other
-- roles are refused before anything runs (sql/idempotent/privileges.sql, models.sql, triggers.sql).
\set SHOW_CONTEXT never
CREATE ROLE regress_imgembed_user;
CREATE ROLE regress_imgembed_admin IN ROLE imgembed_admin;
CREATE TABLE photos (id int PRIMARY KEY, photo bytea, embedding vector(4));
SET ROLE regress_imgembed_user;

SELECT imgembed.load_model('m', '\x00');
SELECT imgembed.load_text_model('m', '\x00', '\x00');
SELECT imgembed.set_default_model('m');
SELECT imgembed.rebuild_model('m');
SELECT imgembed.drop_model('m');
SELECT imgembed.grant_model_usage('m', 'PUBLIC');
SELECT imgembed.revoke_model_usage('m', 'PUBLIC');
SELECT imgembed.model_stats_reset();
SELECT imgembed.worker_read('photos', 'embedding', '[]');
SELECT imgembed.worker_write('photos', 'embedding', '[]');
SELECT imgembed.report_worker_batch('w', 1, '{}', '{}', 0, 0, 0, 0, 0, 0, 0, 0);

-- The extension's tables are written only through its functions.
INSERT INTO imgembed.model_store (name) VALUES ('m');
DELETE FROM imgembed.model_usage;
-- What anyone may read.
SELECT count(*) FROM imgembed.models;
SELECT count(*) > 0 AS known_models FROM imgembed.catalog;

-- An administrator gets past the privilege check to the argument checks.
SET ROLE regress_imgembed_admin;
SELECT imgembed.grant_model_usage('m', 'PUBLIC');
SELECT imgembed.set_default_model('m');
SELECT imgembed.drop_model('m');

RESET ROLE;
DROP TABLE photos;
DROP ROLE regress_imgembed_user, regress_imgembed_admin;
