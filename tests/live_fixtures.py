"""Test helpers for live sources: a real RTSP server process and a file-backed, real-time capture.

`serve_rtsp` (the body of the test modules' `rtsp_server` fixture) starts tests/rtsp_server.py with
the system Python (GStreamer's bindings live there, not in the venv) on a free port and yields an
`RtspServer` whose methods inject faults: `kill` (SIGKILL), `freeze` (SIGSTOP), `thaw` (SIGCONT) and
`restart` (same port). It skips the test, with the reason, when /usr/bin/python3 cannot import
gi + GstRtspServer (run .ci/install-system-deps.sh).
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.fake_camera import PacedCapture

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
CLIP = Path(__file__).resolve().parents[1] / "edumood_live" / "assets" / "sample_clip.mp4"
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "assert Gst.ElementFactory.find('openh264enc') or Gst.ElementFactory.find('x264enc'), 'no H.264 encoder'"
)


@functools.lru_cache(maxsize=1)
def rtsp_unavailable_reason() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is absent (the RTSP test server runs on the system Python)"
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "probing GStreamer with the system Python timed out"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"{SYSTEM_PYTHON} cannot run gst-rtsp-server ({last}); run .ci/install-system-deps.sh"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """tests/rtsp_server.py as a child process, serving the sample clip at `url`."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/clip"
        self.log_path = log_path  # the server's stderr, for failure messages
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and wait (bounded) until it prints READY."""
        deadline = time.monotonic() + timeout_s
        while True:
            with open(self.log_path, "a") as log:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(
                    [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port)],
                    stdout=subprocess.PIPE, stderr=log, text=True,
                )
            if self._wait_ready(deadline):
                return
            self.kill()
            if time.monotonic() > deadline:  # the port may linger briefly after a kill: retry until then
                log_tail = self.log_path.read_text()[-800:]
                raise RuntimeError(f"RTSP server did not start on port {self.port}: {log_tail}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(deadline - time.monotonic(), 0.0)):
                    return False
                line = self.proc.stdout.readline()
                if not line:  # the process exited
                    return False
                if line.strip() == "READY":
                    return True
        return False

    def _signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the server vanishes and its sockets are reset."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is sent any more."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


def serve_rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    """Body of the `rtsp_server` fixture: a running server on a free port, killed afterwards."""
    reason = rtsp_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = RtspServer(free_port(), tmp_path / "rtsp_server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def paced_clip(path: Path = CLIP, fps: float = 30.0, **kwargs: object) -> PacedCapture:
    """The bundled clip as a camera at `fps` (`benchmarks.fake_camera.PacedCapture`)."""
    return PacedCapture(path, fps=fps, **kwargs)  # type: ignore[arg-type]
