"""Multi-process training through torchrun (gloo on CPU): the DDP path really runs and stops consistently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_ranks_early_stop_together(tiny_face_data: Path, tmp_path: Path) -> None:
    # lr ~0: validation macro-F1 cannot improve after the first epoch, so early stopping fires at epoch
    # 1 + patience. Only rank 0 validates; if rank 1 did not learn the decision it would wait forever in
    # DDP's gradient all-reduce for a rank that left, and the timeout below would fail the test.
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", "fit", "--recipe", str(tiny_face_data / "recipe.toml"),
           "--data-root", str(tiny_face_data), "--arch", "fast_small", "--out", str(out), "--epochs", "30",
           "--patience", "1", "--lr", "1e-9", "--batch-size", "8", "--threads", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        proc.communicate()
        raise AssertionError("the ranks hung (timeout): an early-stopping decision was not shared") from None
    assert proc.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 + 1  # epoch 1 is the best, then `patience` epochs without gain
    assert "early stop" in stdout + stderr
