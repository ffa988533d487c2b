"""The extension's objects as a user or a dump sees them, read from the catalog.

tests/test_upgrade.py compares an updated database with a fresh install by these queries;
tests/test_surface.py renders a fresh install's answers into tests/expected/surface.txt.
"""

from __future__ import annotations

import psycopg

EXTENSION = "(SELECT oid FROM pg_extension WHERE extname = 'pg_imgembed')"

# Every property of the extension's objects a user or a dump can see. Column aliases name them in
# the golden file.
CATALOG = {
    "functions": f"""SELECT p.oid::regprocedure::text AS function, l.lanname AS language, p.provolatile AS volatility,
                            p.proisstrict AS strict, p.proparallel AS parallel, p.prosecdef AS security_definer,
                            p.proconfig AS config, p.prorettype::regtype::text AS returns, p.proacl::text AS acl,
                            obj_description(p.oid, 'pg_proc') AS comment, md5(p.prosrc) AS body_md5
                       FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                       JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
                      WHERE d.deptype = 'e' AND d.refobjid = {EXTENSION}""",
    "relations": """SELECT c.relname AS relation, c.relkind AS kind, c.relacl::text AS acl, c.relrowsecurity AS row_security,
                           obj_description(c.oid, 'pg_class') AS comment,
                           CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END AS view_definition
                      FROM pg_class c WHERE c.relnamespace = 'imgembed'::regnamespace AND c.relname NOT LIKE 'enqueue\\_%'""",
    "columns": """SELECT c.relname AS relation, a.attnum AS number, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
                         a.attnotnull AS not_null, pg_get_expr(ad.adbin, ad.adrelid) AS default, a.attisdropped AS dropped,
                         a.attstorage AS storage, a.attacl::text AS acl
                    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                   WHERE c.relnamespace = 'imgembed'::regnamespace AND a.attnum > 0 AND c.relkind IN ('r', 'v', 'S')""",
    "constraints": """SELECT conrelid::regclass::text AS relation, conname AS name, pg_get_constraintdef(oid) AS definition
                        FROM pg_constraint WHERE connamespace = 'imgembed'::regnamespace""",
    "indexes": "SELECT indexname AS index, indexdef AS definition FROM pg_indexes WHERE schemaname = 'imgembed'",
    "policies": """SELECT tablename AS relation, policyname AS policy, permissive, roles::text, cmd AS command,
                          qual AS using, with_check FROM pg_policies WHERE schemaname = 'imgembed'""",
    "members": f"""SELECT pg_describe_object(classid, objid, objsubid) AS member FROM pg_depend
                    WHERE deptype = 'e' AND refobjid = {EXTENSION}""",
    "config": """SELECT extversion AS version, extconfig::regclass[]::text[] AS dumped_tables, extcondition AS dump_conditions
                   FROM pg_extension WHERE extname = 'pg_imgembed'""",
}

# Left out of the golden file: bodies are reviewed where they are written (sql/idempotent/), and a
# PL/Python body embeds the version and the runtime directory (scripts/build_sql.py's preamble).
# test_upgrade still compares them, by hash.
BODIES = {"body_md5", "view_definition"}


def snapshot(dsn: str) -> dict[str, list]:
    with psycopg.connect(dsn) as conn:
        return {name: sorted(conn.execute(query).fetchall(), key=repr) for name, query in CATALOG.items()}


def text(value: object) -> str:
    """A value as psql prints it: t/f, {a,b}, nothing for NULL."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, list):
        return "{" + ",".join(text(v) for v in value) + "}"
    return str(value).replace("\n", "\\n")


def surface(dsn: str) -> str:
    """Every part of CATALOG but the bodies, psql's unaligned format: a header line naming the
    columns, then one line per object, in a stable order."""
    out = []
    with psycopg.connect(dsn) as conn:
        for name, query in CATALOG.items():
            cur = conn.execute(query)
            keep = [i for i, column in enumerate(cur.description) if column.name not in BODIES]
            rows = sorted((tuple(row[i] for i in keep) for row in cur.fetchall()),
                          key=lambda row: tuple((0, "") if v is None else (1, v) for v in row))
            out.append(f"## {name}: " + " | ".join(cur.description[i].name for i in keep))
            out += [" | ".join(text(v) for v in row) for row in rows]
            out.append("")
    return "\n".join(out)
