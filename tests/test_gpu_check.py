"""bench/gpu_check.py, the prepared check for a GPU host, runs here on the CPU provider and
refuses to report CUDA numbers when CUDA is not what runs. No server."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
