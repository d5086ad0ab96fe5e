"""Test helper: start `sailvl2 curate` in a subprocess and SIGKILL it (driver and workers) mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_and_kill(pipeline: Path, workers: int, decisions: Path, pattern: str, after: int,
                 stderr: Path, timeout: float = 240.0) -> int:
    """Run the pipeline until ``after`` files match ``pattern`` in ``decisions``, kill the whole process
    group, and return how many decision files were complete by then."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(stderr, "wb") as errors:
        process = subprocess.Popen([sys.executable, "-m", "sailvl2.cli", "curate", str(pipeline),
                                    "--workers", str(workers)], cwd=REPO_ROOT, env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + timeout
        try:
            while len(list(decisions.glob(pattern))) < after:
                assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-run
            process.wait()
    return len(list(decisions.glob(pattern)))
