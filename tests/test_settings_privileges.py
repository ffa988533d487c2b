"""Who may set what: paths are a superuser's, limits can be lowered by any role and never raised.

Every hostile move here is made by a role that is not a superuser, against the real server.
"""

import os
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from pg_imgembed.settings import C_ONLY, EXECUTION_PROVIDERS, RANGES, SETTING_NAMES, Settings
from tests import images
from tests.helpers import load_tiny, sql_error

PHOTO = images.png(images.photo_like(40, 30, seed=3))  # 1,200 pixels
LIMITS = {"imgembed.max_image_pixels": 1000, "imgembed.intra_op_threads": 1,
          "imgembed.max_cached_models": 2, "imgembed.decode_buffer_mb": 8, "imgembed.inference_timeout_ms": 5000}


@pytest.fixture
def role(conn, dsn):
    """A plain login role: no superuser, no special grants; (name, its DSN)."""
    name = f"hostile_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    yield name, psycopg.conninfo.make_conninfo(dsn, user=name)
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def warnings_of(connection: psycopg.Connection) -> list[str]:
    seen: list[str] = []
    connection.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    return seen


def test_a_role_cannot_point_the_runtime_at_its_own_code(conn, role, local_server):
    load_tiny(conn)
    planted = Path(f"/tmp/imgembed-planted-{uuid.uuid4().hex[:8]}")
    marker = planted / "marker"
    site = planted / "venv" / "lib" / "python3.11" / "site-packages"
    for minor in range(9, 15):  # whichever Python the server runs
        package = planted / "venv" / "lib" / f"python3.{minor}" / "site-packages" / "pg_imgembed"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        (package.parent / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'w').write('pth')\n")
    os.chmod(planted, 0o777)
    try:
        with psycopg.connect(role[1], autocommit=True) as app:
            seen = warnings_of(app)
            app.execute(f"SET imgembed.runtime_dir = '{planted}'")  # a placeholder until the first call
            assert app.execute("SELECT vector_dims(img_embedding(%s))", (PHOTO,)).fetchone() == (4,)
            assert 'permission denied to set parameter "imgembed.runtime_dir"' in seen
            assert app.execute("SELECT imgembed.runtime()->>'runtime_dir'").fetchone()[0] != str(planted)
            err = sql_error(app, f"SET imgembed.runtime_dir = '{planted}'")
            assert err.sqlstate == "42501"
        assert not marker.exists()
        assert site.is_dir()
    finally:
        shutil.rmtree(planted)


def test_a_role_cannot_choose_the_model_cache(conn, role):
    load_tiny(conn)
    with psycopg.connect(role[1], autocommit=True) as app:
        seen = warnings_of(app)
        app.execute("SET imgembed.model_cache = '/tmp'")
        app.execute("SELECT img_embedding(%s)", (PHOTO,))
        assert 'permission denied to set parameter "imgembed.model_cache"' in seen
        assert app.execute("SHOW imgembed.model_cache").fetchone() == ("",)
        err = sql_error(app, "SET imgembed.model_cache = '/tmp'")
        assert (err.sqlstate, err.diag.message_primary) == (
            "42501", 'permission denied to set parameter "imgembed.model_cache"')


@pytest.mark.parametrize("setting", sorted(LIMITS))
def test_limits_can_be_lowered_but_not_raised_by_a_role(conn, role, setting):
    load_tiny(conn)
    ceiling = LIMITS[setting]
    (db,) = conn.execute("SELECT current_database()").fetchone()
    conn.execute(f'ALTER DATABASE "{db}" SET {setting} = {ceiling}')
    with psycopg.connect(role[1], autocommit=True) as app:
        app.execute("SELECT imgembed.load_settings()")
        assert app.execute(f"SHOW {setting}").fetchone() == (str(ceiling),)
        err = sql_error(app, f"SET {setting} = {ceiling + 1}")
        assert err.sqlstate == "42501"
        assert err.diag.message_primary == (
            f"{setting} can only be lowered, from {ceiling} to at most that, not raised to {ceiling + 1}")
        app.execute(f"SET {setting} = {ceiling - 1}")
        app.execute(f"RESET {setting}")
        assert app.execute(f"SHOW {setting}").fetchone() == (str(ceiling),)
        for statement in (f'ALTER ROLE {role[0]} SET {setting} = {ceiling - 1}',
                          f"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql SET {setting} = {ceiling - 1} AS 'SELECT 1'"):
            err = sql_error(app, statement)
            assert err.sqlstate == "42501"
            assert err.diag.message_primary == f"only a superuser may set a default for {setting}"


def test_connection_options_cannot_raise_a_limit(conn, role):
    load_tiny(conn)
    (db,) = conn.execute("SELECT current_database()").fetchone()
    conn.execute(f'ALTER DATABASE "{db}" SET imgembed.max_image_pixels = 1000')
    with psycopg.connect(role[1], autocommit=True, options="-c imgembed.max_image_pixels=100000000") as app:
        for _ in range(2):  # refused at every call, not only the first
            err = sql_error(app, "SELECT img_embedding(%s)", (PHOTO,))
            assert err.sqlstate == "42501"
            assert err.diag.message_primary == (
                "a connection option set imgembed.max_image_pixels, which only a superuser may give a default")
            assert err.diag.message_hint.startswith("Reconnect without -c imgembed.max_image_pixels")


def test_a_superuser_sets_limits_at_every_level(conn, dsn):
    load_tiny(conn)  # ALTER SYSTEM needs the settings defined in this session
    (db,) = conn.execute("SELECT current_database()").fetchone()
    settings = {**{k: str(v) for k, v in LIMITS.items()}, "imgembed.force_exact_decode": "on",
                "imgembed.execution_provider": "cpu", "imgembed.model_cache": "off", "imgembed.runtime_dir": "",
                "imgembed.inference_server": "http://inference.example:8000", "imgembed.inference_token_file": "/etc/imgembed/token"}
    try:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute(f'ALTER DATABASE "{db}" SET {name} = \'{value}\'')
    finally:
        for name in settings:
            conn.execute(f"ALTER SYSTEM RESET {name}")
    with psycopg.connect(dsn, autocommit=True) as fresh:
        shown = {name: fresh.execute(f"SHOW {name}").fetchone()[0] for name in settings}
    assert shown == settings


def test_every_limit_has_a_hard_range(conn):
    load_tiny(conn)
    for setting, low, high in [("imgembed.max_image_pixels", 1, 1_000_000_000), ("imgembed.intra_op_threads", 0, 64),
                               ("imgembed.max_cached_models", 1, 100), ("imgembed.decode_buffer_mb", 0, 4096),
                               ("imgembed.inference_timeout_ms", 1, 3_600_000)]:
        err = sql_error(conn, f"SET {setting} = {high + 1}")
        assert err.sqlstate == "22023"
        assert err.diag.message_primary == (
            f'{high + 1} is outside the valid range for parameter "{setting}" ({low} .. {high})')


def test_the_c_module_defines_the_python_settings(conn):
    """src/pg_imgembed.c and settings.py hold the same names, types, defaults, ranges and units."""
    conn.execute("SELECT imgembed.load_settings()")
    # A parallel worker's pg_settings lacks what the leader defined on first use (set_config is
    # parallel unsafe, so this query runs in the leader).
    conn.execute("SELECT set_config(name, 'off', false) FROM pg_settings WHERE name IN ('debug_parallel_query', 'force_parallel_mode')")
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT name, vartype, boot_val, min_val, max_val, unit, enumvals FROM pg_settings WHERE name LIKE 'imgembed.%'")}
    assert set(rows) == set(SETTING_NAMES) | set(C_ONLY)
    kinds = {bool: "bool", int: "integer", str: "string"}
    for guc, field in SETTING_NAMES.items():
        vartype, boot, low, high, unit, enumvals = rows[guc]
        default = getattr(Settings(), field)
        if field == "execution_provider":
            assert (vartype, enumvals) == ("enum", list(EXECUTION_PROVIDERS)), guc
        else:
            assert vartype == kinds[type(default)], guc
        assert boot == ({True: "on", False: "off"}[default] if isinstance(default, bool) else str(default)), guc
        assert (low, high) == (tuple(map(str, RANGES[field])) if field in RANGES else (None, None)), guc
        assert unit is None, guc  # units are in the names (_mb, _ms)
