-- STRICT functions answer NULL for a NULL argument, whatever the others: no error, no model needed.
\set SHOW_CONTEXT never
SELECT img_embedding(NULL) IS NULL AS img_embedding;
SELECT img_embedding(NULL, 'nope') IS NULL AS img_embedding_named;
SELECT vector_embedding('nope', NULL::bytea) IS NULL AS vector_embedding_image;
SELECT vector_embedding('nope', NULL::text) IS NULL AS vector_embedding_text;
SELECT text_embedding('nope', NULL) IS NULL AS text_embedding;
SELECT imgembed.set_default_model(NULL) IS NULL AS set_default_model;
SELECT imgembed.drop_model(NULL) IS NULL AS drop_model;
SELECT imgembed.grant_model_usage('nope', NULL) IS NULL AS grant_model_usage;
SELECT imgembed.revoke_model_usage(NULL, 'PUBLIC') IS NULL AS revoke_model_usage;
SELECT imgembed.primary_key(NULL) IS NULL AS primary_key;
SELECT imgembed.column_type('pg_class', NULL) IS NULL AS column_type;

-- Not STRICT: a NULL model means the default one. A NULL batch gives NULL; an empty one still needs its model.
SELECT imgembed.embed_batch(NULL, NULL) IS NULL AS embed_batch;
SELECT imgembed.embed_batch('nope', '{}') AS embed_batch_empty;
