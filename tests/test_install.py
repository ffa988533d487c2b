"""Installation: idempotent `make install`, an overridable runtime location, the Docker image's
recipe (no Docker engine here to build it, so what can be checked without building is)."""

import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = Path(os.environ.get("PG_IMGEMBED_RUNTIME_DIR", "/usr/local/lib/pg_imgembed"))
installed_here = pytest.mark.skipif(not RUNTIME_DIR.is_dir(), reason="needs make install on this machine")


def pg_config() -> str:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_config"), key=lambda p: int(p.parent.parent.name))
    return str(found[-1])


def installed_files() -> dict[str, tuple[str, int]]:
    sharedir = subprocess.run([pg_config(), "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    paths = list(Path(sharedir, "extension").glob("pg_imgembed*"))
    paths += [p for p in (RUNTIME_DIR / "venv").rglob("*") if p.is_file()]
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


@installed_here
@pytest.mark.skipif(os.geteuid() != 0, reason="make install needs root")
def test_make_install_twice_changes_nothing():
    run = lambda: subprocess.run(["make", "-C", str(ROOT), "install", f"RUNTIME_DIR={RUNTIME_DIR}"],
                                 capture_output=True, text=True, check=True).stdout
    run()
    before = installed_files()
    output = run()
    assert installed_files() == before
    assert "apt-get install" not in output and "installing runtime packages" not in output
    assert any(path.endswith("pg_imgembed.control") for path in before)


@installed_here
def test_runtime_location_is_a_setting(local_server, dsn):
    """imgembed.runtime_dir points the server at a runtime installed elsewhere."""
    alternative = Path("/tmp") / f"imgembed-runtime-{os.getpid()}"
    site = next((RUNTIME_DIR / "venv" / "lib").glob("python3.*/site-packages"))
    target = alternative / "venv" / "lib" / site.parent.name
    target.mkdir(parents=True, exist_ok=True)
    try:
        (target / "site-packages").symlink_to(site)
        with psycopg.connect(dsn, options=f"-c imgembed.runtime_dir={alternative}") as conn:
            (where,) = conn.execute("SELECT imgembed.runtime()->>'runtime_dir'").fetchone()
        assert where == str(alternative)
    finally:
        subprocess.run(["rm", "-rf", str(alternative)], check=True)


# ---------------------------------------------------------------- Docker image recipe
# (tests/test_docker.py builds and runs it where a Docker engine is at hand)

DOCKERFILE = "docker/Dockerfile"


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_copies_only_files_that_exist():
    copies = [shlex.split(args) for op, args in dockerfile_instructions(DOCKERFILE) if op == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for source in sources:
            assert (ROOT / source).exists(), source


def test_dockerfile_builds_on_debian_13_with_postgres_17_through_make_install():
    instructions = dockerfile_instructions(DOCKERFILE)
    assert instructions[0] == ("ARG", "BASE=debian:trixie-slim")
    assert instructions[1] == ("FROM", "${BASE}")
    assert any(op == "ENV" and "PG_MAJOR=17" in args for op, args in instructions)
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "make install" in runs


def test_dockerfile_copies_everything_make_install_reads():
    copied = " ".join(args for op, args in dockerfile_instructions(DOCKERFILE) if op == "COPY")
    for needed in ("Makefile", "extension.mk", "pg_imgembed.control", "requirements-runtime.txt",
                   "scripts/install-deps.sh", "scripts/build_sql.py", "sql/", "src/", "pg_imgembed/"):
        assert needed in copied, needed


def test_the_cuda_image_is_the_same_recipe_with_the_gpu_build_at_the_pinned_version():
    assert ("ARG", "ONNXRUNTIME=onnxruntime") in dockerfile_instructions(DOCKERFILE)
    assert '--build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]"' in (ROOT / "docker" / "build-images.sh").read_text()
    # install-deps.sh swaps the build in at requirements-runtime.txt's onnxruntime pin
    pins = (ROOT / "requirements-runtime.txt").read_text()
    assert re.search(r"^onnxruntime==\d", pins, re.M)
    assert 'sed "s/^onnxruntime==/$ONNXRUNTIME==/"' in (ROOT / "scripts" / "install-deps.sh").read_text()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text().split("\n## ")[0]


def test_install_deps_takes_the_debian_mirror_from_the_hosts_apt_sources():
    script = (ROOT / "scripts" / "install-deps.sh").read_text()
    assert "deb.debian.org" not in script  # hosts behind a local mirror or proxy fetch from it
    function = script[script.index("debian_mirror() {"):script.index("\n}\n", script.index("debian_mirror() {")) + 3]
    found = subprocess.run(["bash", "-c", function + "debian_mirror"], capture_output=True, text=True, check=True).stdout.strip()
    sources = " ".join(p.read_text() for p in Path("/etc/apt").rglob("*.sources")) + " ".join(
        p.read_text() for p in Path("/etc/apt").rglob("*.list") if p.is_file())
    assert found and found in sources
