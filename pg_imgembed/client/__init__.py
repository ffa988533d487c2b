"""Client-side code: the ``pg-imgembed`` CLI, the async worker, the throwaway dev cluster and
model-directory import. None of it runs inside the server, so ``make install`` leaves it out of
the server's runtime; it talks to the database with psycopg."""
