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

-- ------------------------------------------------------------ tables dropped without drop_embedding_trigger

-- A table dropped with DROP TABLE leaves its rows here behind (lineage, jobs, counts) and its
-- generated enqueue functions, and PostgreSQL reuses OIDs: a new table could inherit a "fresh"
-- lineage row of another model, or fail to get an async trigger. So every dropped table is
-- forgotten at the end of its DROP. SECURITY DEFINER: the dropping role owns the table, not these
-- rows; only the rows and functions of the tables that command dropped are touched.
-- Here, not with the other functions, because the event trigger below needs it.
CREATE FUNCTION imgembed.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    enqueue regprocedure;
BEGIN
    IF pg_catalog.to_regclass('imgembed.lineage') IS NULL THEN
        RETURN;  -- DROP EXTENSION pg_imgembed: its tables went with it
    END IF;
    dropped := ARRAY(SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE object_type = 'table');
    IF dropped = '{}' THEN
        RETURN;
    END IF;
    DELETE FROM imgembed.lineage WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue WHERE tbl::oid = ANY (dropped);
    DELETE FROM imgembed.queue_stats WHERE tbl::oid = ANY (dropped);
    FOR enqueue IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p, pg_catalog.unnest(dropped) d(relid)
                    WHERE p.proname LIKE 'imgembed\_enqueue\_' || d.relid || '\_%' LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', enqueue);
    END LOOP;
END
$$;
COMMENT ON FUNCTION imgembed.forget_dropped_tables() IS
    'Event trigger: forget the lineage, jobs and enqueue functions of dropped tables';
CREATE EVENT TRIGGER imgembed_forget_dropped_tables ON sql_drop EXECUTE FUNCTION imgembed.forget_dropped_tables();
