-- 0.3.0's changes to the tables (run once: by a fresh install after 002, or by the update from
-- 0.1.0 or 0.2.0): text towers beside the image towers, and where a derived model came from.

-- ------------------------------------------------------------ models: derived models

-- A model made from another (an INT8 copy, pg-imgembed models quantize) records which and how, in
-- its own ONNX metadata (pg_imgembed.derived_from); load_model copies that here.
ALTER TABLE imgembed.model_store ADD COLUMN derived_from jsonb;

-- ------------------------------------------------------------ text towers

-- A model family is one name: its image tower in model_store and, optionally, the text tower of
-- the same model here (a CLIP pair), so text_embedding('clip', ...) and img_embedding(...,
-- 'clip') give vectors of one space. The tokenizer (tokenizer.json) is stored beside the ONNX;
-- both are what the reference pipelines run. image_sha256 pairs the tower with the image tower it
-- was loaded against: a replaced image tower leaves the text tower refused until it is reloaded.
CREATE TABLE imgembed.text_model_store (
    name             text PRIMARY KEY REFERENCES imgembed.model_store (name) ON DELETE CASCADE ON UPDATE CASCADE,
    onnx             bytea NOT NULL,
    sha256           text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes            bigint NOT NULL CHECK (bytes = length(onnx)),
    tokenizer        bytea NOT NULL,
    tokenizer_sha256 text NOT NULL CHECK (tokenizer_sha256 ~ '^[0-9a-f]{64}$'),
    dimensions       integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    max_length       integer NOT NULL CHECK (max_length > 0),
    config           jsonb NOT NULL,
    image_sha256     text NOT NULL CHECK (image_sha256 ~ '^[0-9a-f]{64}$'),
    generation       bigint NOT NULL DEFAULT pg_catalog.nextval('imgembed.model_generation'),
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    loaded_by        name NOT NULL DEFAULT current_user
);
ALTER TABLE imgembed.text_model_store ALTER COLUMN onnx SET STORAGE EXTERNAL;
COMMENT ON TABLE imgembed.text_model_store IS
    'Text towers (ONNX + tokenizer.json) of model families; write through imgembed.load_text_model(), read through imgembed.models';
SELECT pg_catalog.pg_extension_config_dump('imgembed.text_model_store', '');
-- The family's privileges: a role uses the text tower of the models it may use.
GRANT SELECT ON imgembed.text_model_store TO PUBLIC;
ALTER TABLE imgembed.text_model_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY model_users ON imgembed.text_model_store FOR SELECT USING (imgembed.has_model_usage(name));
CREATE POLICY model_admins ON imgembed.text_model_store FOR ALL
    USING (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'))
    WITH CHECK (pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE'));
