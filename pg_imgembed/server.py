"""Where the released install scripts (sql/released/, frozen) start the runtime.

Their PL/Python bodies run ``from pg_imgembed import server; server.start(...)``; with this
release's runtime that must still end in the version mismatch that names the fix (ALTER EXTENSION
UPDATE), not in an ImportError. This release's SQL imports ``pg_imgembed.backend.server``.
"""

from .backend.server import start as start
