"""Helpers for the CLI tests: the documented output schema, reading outputs back, running the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import onnxruntime as ort

HEAD_COLUMNS = ["window_start", "window_end", "source", "status", "frames", "fps", "faces_mean", "tracks"]
TAIL_COLUMNS = ["engagement_index", "dominant_label", "low_confidence_share", "dropped_frames", "attention_share"]
STATUSES = {"ok", "gap", "partial", "ended", "suppressed"}


def model_labels(model: Path) -> list[str]:
    """Labels from the model's own metadata (the single source of truth)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["labels"])


def schema(labels: Sequence[str]) -> list[str]:
    """The documented window-row columns for these labels."""
    return [*HEAD_COLUMNS, *(f"share_{label.lower()}" for label in labels), *TAIL_COLUMNS]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows; every line must have exactly as many fields as the header."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    header, body = lines[0], lines[1:]
    assert all(len(line) == len(header) for line in body), "a CSV row is not whole"
    return header, [dict(zip(header, line, strict=True)) for line in body]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def span_s(row: dict[str, object]) -> float:
    start, end = (datetime.fromisoformat(str(row[k]).replace("Z", "+00:00"))
                  for k in ("window_start", "window_end"))
    return (end - start).total_seconds()


def check_row(row: dict[str, str], labels: Sequence[str], faces: float | None = 3.0) -> None:
    """A CSV window row is valid: known status, shares sum to 1 when there were faces."""
    assert row["status"] in STATUSES, row
    shares = [row[f"share_{label.lower()}"] for label in labels]
    if int(row["frames"]) == 0:
        assert row["status"] == "gap" and shares == [""] * len(labels), row
        return
    if faces is not None:
        assert abs(float(row["faces_mean"]) - faces) <= 0.35, row
    if row["dominant_label"]:
        assert abs(sum(float(s) for s in shares) - 1.0) <= 1e-3, row
        assert row["dominant_label"] in labels
        assert -1.0 <= float(row["engagement_index"]) <= 1.0


def cli_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "edumood_live.cli", *(str(a) for a in args)]


def run_cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``edumood-live`` in a child process to the end."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          env={**os.environ, **(env or {})})


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               proc: subprocess.Popen[str] | None = None) -> None:
    """Poll `condition` (bounded); fails with `what`, or early when `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the CLI exited ({proc.returncode}) while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows written so far (none while the file does not exist yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    return read_csv(path)[1]
