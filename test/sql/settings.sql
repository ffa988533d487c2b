-- Who may set which imgembed.* setting (src/pg_imgembed.c). Paths, the inference server and its
-- token file are a superuser's; resource limits may only be lowered by other roles.
\set SHOW_CONTEXT never
CREATE ROLE regress_imgembed_user;
SET ROLE regress_imgembed_user;

-- Before the library defines the settings, a value is a placeholder that any role can set: the
-- first call of the extension's functions defines them and drops it, with a warning.
SET imgembed.inference_server = 'http://elsewhere.example:8000';
SELECT imgembed.load_settings();
SHOW imgembed.inference_server;

-- Defined: a superuser's settings are refused.
SET imgembed.inference_server = 'http://elsewhere.example:8000';
SET imgembed.inference_token_file = '/etc/passwd';
SET imgembed.runtime_dir = '/tmp';
SET imgembed.model_cache = '/tmp';
SET imgembed.optimized_graphs = off;

-- A limit may be lowered in a session, never raised above what a superuser set; RESET goes back.
SET imgembed.max_image_pixels = 1000;
SHOW imgembed.max_image_pixels;
SET imgembed.max_image_pixels = 2000;
SET imgembed.max_image_pixels = 100000001;
RESET imgembed.max_image_pixels;
SHOW imgembed.max_image_pixels;
SET imgembed.max_cached_models = 100;
SET imgembed.decode_buffer_mb = 4096;
SET imgembed.inference_timeout_ms = 3600000;
-- nor made the default of a role or a function
ALTER ROLE regress_imgembed_user SET imgembed.max_image_pixels = 1000;
CREATE FUNCTION pg_temp.raised() RETURNS int LANGUAGE sql SET imgembed.max_image_pixels = 1000 AS 'SELECT 1';

-- Ordinary choices, checked like any setting; the prefix is reserved.
SET imgembed.execution_provider = 'nonsense';
SET imgembed.force_exact_decode = on;
SET imgembed.max_image_pixels = 0;
SET imgembed.no_such_setting = 1;

-- A superuser may set them all.
RESET ROLE;
SET imgembed.inference_server = 'http://elsewhere.example:8000';
SET imgembed.max_image_pixels = 200000000;
SHOW imgembed.max_image_pixels;
RESET ALL;
DROP ROLE regress_imgembed_user;
