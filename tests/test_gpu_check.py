"""bench/gpu_check.py, the prepared check for a GPU host, runs here on the CPU provider and
refuses to report CUDA numbers when CUDA is not what runs. No server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = Path(os.environ.get("PG_IMGEMBED_TRITON_VENV", ROOT / ".triton-venv"))
SCRIPT = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--model", "tiny", "--photos", "4", "--sizes", "64x48,96x64"]


def test_the_check_reports_every_size_and_path_on_the_cpu():
    done = subprocess.run([*SCRIPT, "--provider", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model tiny, session on cpu, GPU memory for the session: ")
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [("64x48", "backend"), ("64x48", "worker"), ("96x64", "backend"), ("96x64", "worker")]
    assert all(float(r[-2]) > 0 and float(r[-1]) > 0.9999 for r in rows)


def test_cuda_that_cannot_run_is_a_failure_not_cpu_numbers():
    done = subprocess.run([*SCRIPT, "--provider", "cuda"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stdout.startswith("FAIL: execution provider cuda was asked for")
    assert "images/s" not in done.stdout


def test_the_serve_path_reports_rates_and_cosine_through_one_triton(server_kind):
    """--serve: a throwaway cluster (the host's install), pg-imgembed serve on the CPU here."""
    if server_kind != "local":
        pytest.skip("starts a local cluster of the host's install")
    done = subprocess.run([*SCRIPT, "--provider", "cpu", "--serve", "--triton-venv", str(TRITON_VENV)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model tiny through pg-imgembed serve --provider cpu, GPU memory of serve: ")
    rows = [line.rsplit(None, 2) for line in lines[2:]]
    assert [r[0] for r in rows] == ["16 connections, sync trigger", "worker (2 x batch 16)"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0.999999 for r in rows)
