"""The runtime's pinned packages win over the system's (Debian's python3-numpy, -pil, -protobuf)."""

from pathlib import Path

import pytest

from tests.helpers import load_tiny, sql_error

DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
MODULES = {"numpy": "numpy", "PIL": "PIL", "pi_heif": "pi_heif", "onnxruntime": "onnxruntime", "onnx": "onnx",
           "google.protobuf": "google/protobuf", "tokenizers": "tokenizers"}


def test_every_runtime_package_comes_from_the_runtime(conn):
    load_tiny(conn)  # builds a pipeline model: onnx and protobuf are imported too
    (report,) = conn.execute("SELECT imgembed.runtime()->'packages'").fetchone()
    assert sorted(report) == sorted(MODULES)
    (site,) = conn.execute("SELECT imgembed.runtime()->>'runtime_dir'").fetchone()
    for module, entry in report.items():
        assert entry["from_runtime"] is True, (module, entry)
        assert entry["path"].startswith(site + "/venv/"), (module, entry)
        assert entry["version"]


@pytest.mark.skipif(not (DIST_PACKAGES / "numpy").is_dir(), reason="needs Debian's python3-numpy (CI installs it)")
def test_a_system_package_imported_first_is_a_runtime_error(conn, local_server):
    """Another PL/Python function of the session imported Debian's numpy before pg_imgembed."""
    conn.execute("""CREATE FUNCTION import_system_numpy() RETURNS text LANGUAGE plpython3u AS $$
                    import sys
                    sys.path.insert(0, '/usr/lib/python3/dist-packages')
                    import numpy
                    return numpy.__file__ $$""")
    (path,) = conn.execute("SELECT import_system_numpy()").fetchone()
    assert path.startswith(str(DIST_PACKAGES))
    err = sql_error(conn, "SELECT imgembed.runtime()")
    assert err.sqlstate == "58P01"
    assert err.diag.message_primary.startswith(
        f"the runtime's Python module numpy comes from {path}, not from ")
    assert err.diag.message_hint.startswith("If another PL/Python function imported it first in this session")
