-- Lineage: which model generation made each embedded column's vectors (see imgembed.lineage).
-- Idempotent: run by every install and every update (scripts/build_sql.py).

CREATE OR REPLACE VIEW imgembed.vector_lineage AS
SELECT l.tbl, l.vector_column, l.model, l.sha256 AS produced_by, m.sha256 AS current_sha256,
       l.generation AS produced_by_generation, m.generation AS current_generation,
       m.generation IS DISTINCT FROM l.generation AS stale, l.target_generation IS NOT NULL AS reembedding,
       l.updated_at
  FROM imgembed.lineage l LEFT JOIN imgembed.model_store m ON m.name = l.model;
COMMENT ON VIEW imgembed.vector_lineage IS
    'Per embedded column: the model (sha256, generation) that made its vectors and whether they are stale';
GRANT SELECT ON imgembed.vector_lineage TO PUBLIC;
