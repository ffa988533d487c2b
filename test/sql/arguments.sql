-- Arguments checked before any model runs: the errors users see, message and hint verbatim.
\set SHOW_CONTEXT never
CREATE TABLE photos (id int PRIMARY KEY, photo bytea, embedding vector(4), caption text);

-- No model loaded yet
SELECT img_embedding('\x00');
SELECT img_embedding('\x00', 'nope');
SELECT vector_embedding('nope', '\x00'::bytea);
SELECT text_embedding('nope', 'a cat');
SELECT imgembed.set_default_model('nope');
SELECT imgembed.drop_model('nope');
SELECT imgembed.grant_model_usage('nope', 'PUBLIC');

-- Triggers and backfill name tables and columns that must fit
SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding', 'nope');
SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding', mode => 'sometimes');
SELECT imgembed.create_embedding_trigger('photos', 'photo', 'embedding', on_error => 'ignore');
SELECT imgembed.create_embedding_trigger('photos', 'missing', 'embedding');
SELECT imgembed.create_embedding_trigger('photos', 'photo', 'caption');
SELECT imgembed.drop_embedding_trigger('photos', 'embedding');
CALL imgembed.backfill('photos', 'photo', 'embedding');
SELECT imgembed.worker_read('photos', 'embedding', '[]');

DROP TABLE photos;
