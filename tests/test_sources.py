"""Tests for edumood_live.sources (files, folders, live) on small real media.

Live behaviour is driven through real captures: the webcam path with a real-time-paced
`cv2.VideoCapture` on the bundled clip, network streams with a real GStreamer RTSP server that the
tests kill, freeze and restart. Waits poll with bounded deadlines; nothing sleeps to assert.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_fixtures import CLIP, RtspServer, free_port, paced_clip, serve_rtsp

from benchmarks.fake_camera import PacedCapture
from edumood_live.errors import ConfigError, SourceError
from edumood_live.sources import (
    ImageFolderSource,
    LiveSource,
    Source,
    SourceConfig,
    SourceState,
    VideoFileSource,
    open_source,
    redact_url,
)
from edumood_live.types import Frame

CLIP_FRAMES, CLIP_FPS, CLIP_SHAPE = 36, 12.0, (270, 480, 3)
FAST_LIVE = {"open_timeout_s": 5.0, "read_timeout_s": 1.0, "watchdog_s": 2.0,
             "backoff_initial_s": 0.2, "backoff_max_s": 1.0}


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[RtspServer]:
    """A real RTSP server (tests/rtsp_server.py) on a free port; skips when GStreamer is missing."""
    yield from serve_rtsp(tmp_path)


def assert_bgr(frame: Frame, shape: tuple[int, ...] | None = None) -> None:
    image = frame.image
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags["C_CONTIGUOUS"]
    if shape is not None:
        assert image.shape == shape


def wait_for(source: Source, condition: Callable[[], bool], timeout_s: float) -> float:
    """Keep reading until `condition()` holds; returns the seconds it took, fails after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"timed out after {timeout_s} s: {source.stats()}"
        source.read(0.05)
    return time.monotonic() - start


def read_frames(source: Source, count: int, timeout_s: float) -> list[Frame]:
    """The next `count` frames; fails when they do not all arrive within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    frames: list[Frame] = []
    while len(frames) < count:
        assert time.monotonic() < deadline, f"{len(frames)}/{count} frames in {timeout_s} s: {source.stats()}"
        frame = source.read(0.1)
        if frame is not None:
            frames.append(frame)
    return frames


# ----------------------------------------------------------------------------- config and errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec", ""),
        ("stride", 0),
        ("stride", 1.5),
        ("stride", True),
        ("max_fps", 0),
        ("max_fps", float("nan")),
        ("open_timeout_s", 0),
        ("read_timeout_s", -1.0),
        ("watchdog_s", float("inf")),
        ("max_retries", -1),
        ("backoff_initial_s", 0),
        ("folder_fps", "2"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{field}=.*not allowed"):
        SourceConfig(**{field: value})


def test_config_backoff_max_below_initial() -> None:
    with pytest.raises(ConfigError, match=r"backoff_max_s=0.1 is not allowed; it must be >= backoff_initial"):
        SourceConfig(backoff_initial_s=1.0, backoff_max_s=0.1)


def test_open_errors(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_text("this is text, not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "broken_dir").mkdir()
    (tmp_path / "broken_dir" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cases = {
        str(tmp_path / "missing.mp4"): "no such file or folder",
        str(tmp_path / "x.mp4"): "could not be opened as a video",
        str(tmp_path / "empty.mp4"): "could not be opened as a video",
        str(tmp_path / "empty_dir"): "contains no image files",
        str(tmp_path / "broken_dir"): "none of its 1 image file",
        "ftp://example.org/stream": r"unknown scheme ftp://.*allowed: rtsp://",
    }
    for spec, message in cases.items():
        with pytest.raises(SourceError, match=message):
            open_source(SourceConfig(spec))


@pytest.mark.skipif(any(Path("/dev").glob("video*")), reason="a camera device exists here")
def test_missing_camera_says_so() -> None:
    with pytest.raises(SourceError, match=r"camera 0 could not be opened; no camera device exists"):
        open_source(SourceConfig("webcam"))


def test_a_camera_that_is_down_at_start_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    """A recorder started before its camera waits for it (same backoff and retry limit as for a lost
    connection) instead of exiting; a camera index with no device still fails at once (above)."""
    spec = f"rtsp://user:secret@127.0.0.1:{free_port()}/clip"
    config = SourceConfig(spec, **{**FAST_LIVE, "max_retries": 2, "backoff_initial_s": 0.05})
    with caplog.at_level("WARNING"), open_source(config) as source:
        assert isinstance(source, LiveSource) and source.read(0.0) is None
        assert source.stats().state in ("reconnecting", "failed")
        wait_for(source, lambda: source.finished, 30.0)
        stats = source.stats()
    assert stats.state == "failed" and stats.attempt == 2 and stats.reconnects == 0
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert [w.split("; ")[-1].split(" in ")[0] for w in waits] == ["attempt 1", "attempt 2"]
    assert all("rtsp://user:***@127.0.0.1" in w and "secret" not in w for w in waits)


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pw@cam.local:554/s") == "rtsp://admin:***@cam.local:554/s"
    assert redact_url("rtsp://cam.local/s") == "rtsp://cam.local/s"
    assert redact_url("rtsp://cam.local:554/s") == "rtsp://cam.local:554/s"
    assert redact_url("rtsp://TOKEN@cam.local/s") == "rtsp://***@cam.local/s"  # a bare token is a secret too
    assert redact_url("from rtsp://a:b@x/1 and http://c:d@y/2") == "from rtsp://a:***@x/1 and http://c:***@y/2"


# ----------------------------------------------------------------------------- files and folders


def test_demo_reads_every_frame_with_media_time() -> None:
    with open_source(SourceConfig("demo")) as source:
        assert isinstance(source, VideoFileSource) and source.name == "demo" and not source.live
        frames = list(source)
        assert source.finished and source.read(0.1) is None
        stats = source.stats()
    assert len(frames) == CLIP_FRAMES
    for i, frame in enumerate(frames):
        assert_bgr(frame, CLIP_SHAPE)
        assert frame.index == i
        assert frame.timestamp_ms == pytest.approx(i * 1000 / CLIP_FPS, abs=0.5)
    assert (stats.frames_read, stats.decode_errors, stats.state) == (CLIP_FRAMES, 0, "ended")


@pytest.mark.parametrize(("stride", "expected"), [(1, 36), (3, 12), (5, 8), (100, 1)])
def test_video_stride(stride: int, expected: int) -> None:
    with open_source(SourceConfig(str(CLIP), stride=stride)) as source:
        frames = list(source)
        stats = source.stats()
    assert [f.index for f in frames] == list(range(0, CLIP_FRAMES, stride))
    assert [f.timestamp_ms for f in frames] == pytest.approx([f.index * 1000 / CLIP_FPS for f in frames])
    assert stats.frames_read == expected
    assert stats.frames_skipped == min(expected * stride, CLIP_FRAMES) - expected  # decoded, not handed out


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_video_ends_cleanly_and_counts(tmp_path: Path, damage: str) -> None:
    data = bytearray(CLIP.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[40000:52000] = np.random.default_rng(0).integers(0, 256, 12000, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with open_source(SourceConfig(str(path))) as source:
        frames = list(source)
        stats = source.stats()
    assert 0 < len(frames) < CLIP_FRAMES
    assert stats.decode_errors >= 1 and stats.last_error is not None
    if damage == "truncated":  # far fewer frames than the container announces: said, not passed over
        assert f"of the {CLIP_FRAMES} frames the file announces could be read" in stats.last_error
    timestamps = [f.timestamp_ms for f in frames]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)
    for frame in frames:
        assert_bgr(frame, CLIP_SHAPE)


def test_video_max_fps_paces_replay() -> None:
    with open_source(SourceConfig(str(CLIP), max_fps=50.0)) as source:
        start = time.monotonic()
        frames = [source.read(1.0) for _ in range(11)]
        elapsed = time.monotonic() - start
    assert all(f is not None for f in frames)
    assert elapsed >= 10 / 50 * 0.95  # 10 intervals at no more than 50 fps


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Images of every awkward kind, plus a text file and a corrupt jpg, in a natural-sort order."""
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[:, :, 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "img1.png"), colour)
    cv2.imwrite(str(tmp_path / "img2.png"), np.full((20, 30), 77, np.uint8))  # grey
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[:, :, 0], bgra[:, :, 3] = 150, 255  # blue, opaque
    cv2.imwrite(str(tmp_path / "img3.png"), bgra)
    cv2.imwrite(str(tmp_path / "img4.png"), np.full((20, 30, 3), 65535, np.uint16))  # 16-bit white
    (tmp_path / "img5.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)  # corrupt jpeg
    cv2.imwrite(str(tmp_path / "img10.jpg"), colour)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_converts_and_skips(image_folder: Path) -> None:
    with open_source(SourceConfig(str(image_folder), folder_fps=2.0)) as source:
        assert isinstance(source, ImageFolderSource)
        frames = list(source)
        stats = source.stats()
    for frame in frames:
        assert_bgr(frame, (20, 30, 3))
    assert [f.index for f in frames] == [0, 1, 2, 3, 5]  # img5.jpg (index 4) is corrupt; img10 sorts last
    assert [f.timestamp_ms for f in frames] == [0.0, 500.0, 1000.0, 1500.0, 2500.0]
    red, grey, blue, white, _ = (f.image[5, 5].tolist() for f in frames)
    assert red == [0, 0, 200] and grey == [77, 77, 77] and blue == [150, 0, 0] and white == [255, 255, 255]
    assert (stats.frames_read, stats.decode_errors, stats.frames_skipped) == (5, 1, 1)
    assert "img5.jpg" in (stats.last_error or "")


def test_image_folder_stride(image_folder: Path) -> None:
    with open_source(SourceConfig(str(image_folder), stride=2)) as source:
        indices = [f.index for f in source]
    assert indices == [0, 2, 5]  # 4 (corrupt) is passed over, 5 is the next readable one


# ----------------------------------------------------------------------------- webcam path (file-backed)


def paced_factory(**kwargs: object) -> tuple[Callable[[], PacedCapture], list[PacedCapture]]:
    """A capture factory over the bundled clip; also returns the list of captures it made."""
    made: list[PacedCapture] = []

    def factory() -> PacedCapture:
        made.append(paced_clip(**kwargs))
        return made[-1]

    return factory, made


def test_webcam_reads_real_time_frames() -> None:
    factory, made = paced_factory(fps=30.0)
    with open_source(SourceConfig("webcam", **FAST_LIVE), capture_factory=factory) as source:
        assert isinstance(source, LiveSource) and source.live and source.name == "camera:0"
        frames = read_frames(source, 10, 5.0)
    for frame in frames:
        assert_bgr(frame, CLIP_SHAPE)
    assert (np.diff([f.timestamp_ms for f in frames]) > 0).all()
    assert source.finished and source.stats().state == "ended"
    assert made[0].frames > 0


def test_slow_consumer_gets_latest_frames_only() -> None:
    factory, made = paced_factory(fps=60.0)
    with open_source(SourceConfig("0", **FAST_LIVE), capture_factory=factory) as source:
        frames, behind = [], []
        for _ in range(8):
            time.sleep(0.1)  # a consumer slower than the camera (work, not a wait for a condition)
            frame = source.read(1.0)
            assert frame is not None
            behind.append(made[-1].frames - 1 - frame.index)  # frames grabbed since this one
            frames.append(frame)
        stats = source.stats()
    assert stats.frames_dropped >= 8 * 3  # about 5 of every 6 frames superseded
    assert (np.diff([f.timestamp_ms for f in frames]) > 0).all()
    assert (np.diff([f.index for f in frames]) >= 3).all()  # the stale frames in between were never seen
    # newest frame, not a queue: at most the one grabbed while we read (counted in frames, not wall time)
    assert max(behind) <= 1, behind


def test_live_max_fps_drops_frames() -> None:
    factory, _ = paced_factory(fps=60.0)
    config = SourceConfig("0", max_fps=15.0, **FAST_LIVE)
    with open_source(config, capture_factory=factory) as source:
        frames = read_frames(source, 10, 5.0)
        stats = source.stats()
    interval_ms = np.diff([f.timestamp_ms for f in frames]).mean()
    assert 1000 / 15 * 0.8 <= interval_ms <= 1000 / 15 * 1.5
    assert stats.frames_dropped >= len(frames)


def test_ended_capture_reconnects() -> None:
    factory, made = paced_factory(fps=60.0, max_frames=6)  # a camera that drops out every 6 frames
    with open_source(SourceConfig("0", **FAST_LIVE), capture_factory=factory) as source:
        wait_for(source, lambda: source.stats().reconnects >= 2, 5.0)
        assert source.read(1.0) is not None
    assert len(made) >= 3


def test_max_retries_exhausted_fails() -> None:
    calls: list[float] = []

    def factory() -> PacedCapture:
        calls.append(time.monotonic())
        path = CLIP if len(calls) == 1 else Path("/nonexistent/clip.mp4")
        return PacedCapture(path, fps=60.0, max_frames=3)

    config = SourceConfig("0", **{**FAST_LIVE, "max_retries": 2, "backoff_initial_s": 0.1})
    with open_source(config, capture_factory=factory) as source:
        wait_for(source, lambda: source.finished, 5.0)
        stats = source.stats()
        source.read(0.0)  # the last frame before the failure may still be waiting
        start = time.monotonic()
        assert source.read(5.0) is None and time.monotonic() - start < 0.5  # finished: no waiting
    assert stats.state == "failed" and stats.attempt == 2 and len(calls) == 3
    assert "could not be opened" in (stats.last_error or "")


def test_hung_read_triggers_watchdog_and_close_does_not_hang() -> None:
    factory, made = paced_factory(fps=60.0, hang_after=5)  # every capture's grab() blocks after 5 frames
    config = SourceConfig("0", **{**FAST_LIVE, "watchdog_s": 0.5})
    source = open_source(config, capture_factory=factory)
    try:
        wait_for(source, lambda: source.stats().state == "reconnecting", 3.0)
        assert "watchdog" in (source.stats().last_error or "")
        wait_for(source, lambda: source.stats().reconnects >= 1, 3.0)
        source.close()  # returns although every grabber is still blocked in grab(): abandoned, not waited for
        assert any(t.name.startswith("edumood-grab") for t in threading.enumerate())
        assert source.finished and source.stats().state == SourceState.ENDED
    finally:
        for capture in made:
            capture.release_hang.set()
    deadline = time.monotonic() + 3.0  # once their reads return, the abandoned threads end
    while any(t.name.startswith("edumood-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.02)


# ----------------------------------------------------------------------------- RTSP, real server


@pytest.mark.rtsp
def test_rtsp_reads_frames(rtsp_server: RtspServer) -> None:
    with open_source(SourceConfig(rtsp_server.url, **FAST_LIVE)) as source:
        assert source.live and source.name == rtsp_server.url
        frames = read_frames(source, 5, 10.0)
    for frame in frames:
        assert_bgr(frame, CLIP_SHAPE)
    assert (np.diff([f.timestamp_ms for f in frames]) > 0).all()


@pytest.mark.rtsp
def test_rtsp_server_killed_and_restarted(rtsp_server: RtspServer, record_property: Callable) -> None:
    with open_source(SourceConfig(rtsp_server.url, **FAST_LIVE)) as source:
        wait_for(source, lambda: source.stats().frames_read >= 3, 10.0)
        rtsp_server.kill()
        detect_s = wait_for(source, lambda: source.stats().state == "reconnecting", 5.0)
        rtsp_server.start()
        restarted_ms = time.monotonic() * 1000
        recover_s = wait_for(source, lambda: source.stats().reconnects >= 1, 15.0)
        assert source.stats().state == "connected"
        assert all(f.timestamp_ms > restarted_ms for f in read_frames(source, 3, 5.0))
    record_property("kill_detect_s", round(detect_s, 2))
    record_property("restart_recover_s", round(recover_s, 2))


@pytest.mark.rtsp
@pytest.mark.parametrize("recovery", ["thaw", "restart"])
def test_rtsp_server_frozen(rtsp_server: RtspServer, record_property: Callable, recovery: str) -> None:
    config = SourceConfig(rtsp_server.url, **FAST_LIVE)
    with open_source(config) as source:
        wait_for(source, lambda: source.stats().frames_read >= 3, 10.0)
        rtsp_server.freeze()  # reads now block (~3x read_timeout_s) or trickle stale decoder frames
        detect_s = wait_for(source, lambda: source.stats().state == "reconnecting", config.watchdog_s + 1.5)
        assert "watchdog" in (source.stats().last_error or "")
        rtsp_server.thaw() if recovery == "thaw" else rtsp_server.restart()
        recovered_ms = time.monotonic() * 1000
        recover_s = wait_for(source, lambda: source.stats().reconnects >= 1, 15.0)
        assert all(f.timestamp_ms > recovered_ms for f in read_frames(source, 3, 5.0))
    record_property("freeze_detect_s", round(detect_s, 2))
    record_property(f"{recovery}_recover_s", round(recover_s, 2))


@pytest.mark.rtsp
def test_rtsp_camera_that_comes_up_late_is_connected(rtsp_server: RtspServer) -> None:
    rtsp_server.kill()  # the camera is down when the run starts
    with open_source(SourceConfig(rtsp_server.url, **FAST_LIVE)) as source:
        assert source.stats().state == "reconnecting" and source.read(0.0) is None
        rtsp_server.start()
        started_ms = time.monotonic() * 1000
        wait_for(source, lambda: source.stats().state == "connected", 20.0)
        assert all(f.timestamp_ms > started_ms for f in read_frames(source, 3, 5.0))
        assert source.stats().reconnects == 0  # a first connection, not a reconnection


@pytest.mark.rtsp
def test_rtsp_retries_exhausted(rtsp_server: RtspServer) -> None:
    config = SourceConfig(rtsp_server.url, **{**FAST_LIVE, "max_retries": 2})
    with open_source(config) as source:
        wait_for(source, lambda: source.stats().frames_read >= 1, 10.0)
        rtsp_server.kill()
        wait_for(source, lambda: source.finished, 10.0)
        stats = source.stats()
    assert stats.state == "failed" and stats.attempt == 2


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the clip's folder; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CLIP.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_link_to_a_file_is_read_like_the_file(http_server: str) -> None:
    """A link that serves a file of known length: every frame once, in order, then the end (no looping)."""
    with open_source(SourceConfig(f"{http_server}/{CLIP.name}", **FAST_LIVE)) as source:
        assert not isinstance(source, LiveSource) and not source.live
        remote = [f.timestamp_ms for f in source]
        stats = source.stats()
    with open_source(SourceConfig(str(CLIP))) as local:
        assert remote == [f.timestamp_ms for f in local]
    assert len(remote) == CLIP_FRAMES and stats.state == "ended" and stats.reconnects == 0


def test_an_http_link_that_is_not_a_video_stays_live_and_runs_out(http_server: str) -> None:
    """No frame count (not a file, or not reachable yet): the live path waits and retries, then fails."""
    config = SourceConfig(f"{http_server}/missing.mp4", **{**FAST_LIVE, "max_retries": 1, "backoff_initial_s": 0.05})
    with open_source(config) as source:
        assert isinstance(source, LiveSource)
        wait_for(source, lambda: source.finished, 20.0)
        stats = source.stats()
    assert stats.state == "failed" and stats.attempt == 1
