"""Cluster mode on a real multi-node Ray runtime in this process (`ray.cluster_utils.Cluster`): uneven
nodes, and a node lost mid-run, with room to place its workers again or without. Skipped without the
`cluster` extra (the live-camera scenes also without GStreamer's RTSP server)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest
from cli_helpers import read_csv
from live_fixtures import RtspServer, serve_rtsp

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[cluster]')")
from ray.cluster_utils import Cluster  # noqa: E402

from edumood_live import ClassifierConfig, OutputConfig, RunConfig, SourceConfig  # noqa: E402
from edumood_live import run as run_single  # noqa: E402
from edumood_live.resources import demo_clip_path  # noqa: E402

pytestmark = pytest.mark.cluster
RUN_LIMIT_S = 120.0  # a run not done by then is stopped, and the test fails
FAST_LIVE = {"open_timeout_s": 10.0, "read_timeout_s": 1.0, "watchdog_s": 2.0, "backoff_initial_s": 0.2,
             "backoff_max_s": 1.0}
FAST_RTSP = ("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;500000")
WATCH_S = 15.0  # after the node is lost, how long the test watches before it stops the run
STOP_LIMIT_S = 10.0  # a stop must end the run within this, whatever the workers' state


@contextmanager
def nodes(head_cpus: int, second_cpus: int) -> Iterator[tuple[Cluster, object]]:
    """A head and a second node with these CPUs, this process joined; yields (cluster, second node)."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
    second = cluster.add_node(num_cpus=second_cpus)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")
    cluster.wait_for_nodes()
    try:
        yield cluster, second
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def two_nodes() -> Iterator[tuple[Cluster, object]]:
    """A head with 1 CPU and a second node with 2 CPUs, as in issue 19."""
    with nodes(1, 2) as pair:
        yield pair


@pytest.fixture
def rtsp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RtspServer]:
    monkeypatch.setenv(*FAST_RTSP)  # the driver hands it to the camera workers
    yield from serve_rtsp(tmp_path)


class LiveView:
    """A real live sink that keeps the states it is shown."""

    def __init__(self) -> None:
        self.states: list = []

    def write(self, summary: object) -> None:
        pass

    def update(self, state: object) -> None:
        self.states.append(state)

    def close(self) -> None:
        pass


@dataclass
class LostNodeRun:
    """What `lose_the_second_node` saw: rows with their arrival times, and when things happened."""

    rows: list = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.time() of each row
    lost_at: float = 0.0
    lost_utc: datetime | None = None
    stop_at: float = 0.0
    stop_utc: datetime | None = None
    ended_at: float = 0.0


def lose_the_second_node(run: object, cluster: Cluster, second: object) -> LostNodeRun:
    """Run until both cameras gave two windows with frames, remove the second node (as a machine that dies),
    watch for WATCH_S, then stop (as Ctrl-C does) and time how long the run takes to end."""
    seen = LostNodeRun()

    def stop() -> None:
        seen.stop_at, seen.stop_utc = time.time(), datetime.now(UTC)
        run.stop()  # type: ignore[attr-defined]

    watch = threading.Timer(WATCH_S, stop)
    limit = threading.Timer(RUN_LIMIT_S, run.stop)  # type: ignore[attr-defined]
    limit.start()
    try:
        for row in run.run():  # type: ignore[attr-defined]
            seen.rows.append(row)
            seen.arrived.append(time.time())
            with_frames = Counter(r.source for r in seen.rows if r.frames)
            if not seen.lost_at and len(with_frames) == 2 and min(with_frames.values()) >= 2:
                cluster.remove_node(second, allow_graceful=False)
                seen.lost_at, seen.lost_utc = time.time(), datetime.now(UTC)
                watch.start()
        seen.ended_at = time.time()
    finally:
        watch.cancel()
        limit.cancel()
    assert seen.lost_at, "the cameras never both delivered frames"
    assert seen.stop_at, f"the run ended before the test stopped it: {run.source_states}"  # type: ignore[attr-defined]
    return seen


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled clip looped 5 times (15 s at 12 fps): long enough to lose a node in the middle."""
    capture = cv2.VideoCapture(str(demo_clip_path()))
    frames = []
    while (ok_frame := capture.read())[0]:
        frames.append(ok_frame[1])
    capture.release()
    path = tmp_path_factory.mktemp("clips") / "long.mp4"
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (width, height))
    for _ in range(5):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return path


def _config(model: Path, sources: tuple[str, ...]) -> RunConfig:
    return RunConfig(sources=sources, classifier=ClassifierConfig(model_path=model), window_s=1.0)


def _comparable(rows: list) -> list[tuple]:
    return [(r.source, r.status, r.frames, r.faces_mean, tuple(r.shares.values())) for r in rows]


def test_uneven_nodes_start_every_camera(two_nodes: tuple, tiny_classifier_path: Path) -> None:
    """3 cameras + 1 classifier on nodes of 1 and 2 CPUs: an even 3/4-CPU share fits only 3 of the 4 workers
    (1 + 2 places) and the fourth waited for ever; the node-by-node share starts them all."""
    from edumood_live.cluster import ClusterConfig, ClusterRun

    clip = str(demo_clip_path())
    config = _config(tiny_classifier_path, (clip, clip, "demo"))
    with ClusterRun(config, ClusterConfig(poll_s=0.1, start_timeout_s=60.0)) as run:
        rows = list(run.run())
    assert set(run.source_states.values()) == {"ended"} and len(run.source_states) == 3
    assert len(rows) == 9  # three 3-s clips in 1-s windows


def test_a_lost_node_s_cameras_restart_elsewhere_and_no_row_is_lost(two_nodes: tuple, tiny_classifier_path: Path,
                                                                   long_clip: Path) -> None:
    from edumood_live.cluster import ClusterConfig, ClusterRun

    cluster, second = two_nodes
    config = _config(tiny_classifier_path, (str(long_clip), str(long_clip)))
    rows = []
    with ClusterRun(config, ClusterConfig(poll_s=0.1, start_timeout_s=60.0)) as run:
        on_second = {c.name for c in run.cameras if c.node and c.node == second.node_ip_address}
        guard = threading.Timer(RUN_LIMIT_S, run.stop)  # workers stuck waiting for a place: fail, not hang
        guard.start()
        try:
            for row in run.run():
                rows.append(row)
                if len(rows) == 4:  # a few windows in: the second node dies
                    cluster.remove_node(second, allow_graceful=False)
        finally:
            guard.cancel()
    assert set(run.source_states.values()) == {"ended"}
    restarted = {r.source for r in rows if not r.actor.endswith("#0")}
    assert restarted, f"no camera was restarted (cameras on the lost node: {on_second or 'unknown'})"
    # every file still gives exactly the rows of an uninterrupted single-process run
    single = run_single(_config(tiny_classifier_path, (str(long_clip), str(long_clip))))
    assert sorted(_comparable(rows)) == sorted(_comparable(single))


def test_cameras_that_cannot_be_placed_are_named_with_what_would_fit(
    two_nodes: tuple, tiny_classifier_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edumood_live.cluster import ClusterConfig, ClusterRun
    from edumood_live.errors import ClusterError

    clip = str(demo_clip_path())
    config = _config(tiny_classifier_path, (clip, clip, "demo"))
    with caplog.at_level("WARNING"), pytest.raises(ClusterError, match="did not open within"):
        ClusterRun(config, ClusterConfig(poll_s=0.1, start_timeout_s=5.0, camera_cpus=1.5))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "3 camera(s) at 1.5 CPU each do not fit these nodes (" in said and "room for 1" in said
    assert "--camera-cpus 0.25 would fit them all" in said


@pytest.mark.rtsp
def test_a_lost_camera_with_no_place_to_go_waits_in_view_and_its_live_time_is_written_as_gap_rows(
    rtsp_server: RtspServer, tiny_classifier_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 3-CPU head and a 1-CPU node; the classifier (1.5 CPUs) fits only on the head, and the two live cameras
    (1 CPU each) one on each node. The node dies: its camera has nowhere to go. The driver says so within
    seconds, the view shows it waiting, its windows are written as gap rows until the stop, the other camera's
    rows go on, and the stop ends the run within seconds."""
    from edumood_live.cluster import ClusterConfig, ClusterRun

    csv_out = tmp_path / "rooms.csv"
    live = SourceConfig(rtsp_server.url, **FAST_LIVE)
    config = RunConfig(sources=(live, live), classifier=ClassifierConfig(model_path=tiny_classifier_path),
                       window_s=1.0, output=OutputConfig(csv_path=csv_out))
    view = LiveView()
    with nodes(3, 1) as (cluster, second), caplog.at_level(logging.WARNING, logger="edumood_live.cluster"):
        run = ClusterRun(config, ClusterConfig(poll_s=0.1, start_timeout_s=60.0, camera_cpus=1.0,
                                               classifier_cpus=1.5), sinks=[view])
        seen = lose_the_second_node(run, cluster, second)

    assert seen.ended_at - seen.stop_at < STOP_LIMIT_S, f"the stop took {seen.ended_at - seen.stop_at:.1f} s"
    late = [r for r, t in zip(seen.rows, seen.arrived, strict=True) if t > seen.lost_at + 5.0]
    flowing = {r.source for r in late if r.frames}
    assert len(flowing) == 1, f"one camera should go on after the loss, the other wait: {flowing}"
    lost = next(c.name for c in run.cameras if c.name not in flowing)
    assert sum(1 for r in late if r.source in flowing and r.frames) >= 5  # the other camera's rows flow
    # the driver said within seconds that the lost camera waits, and the view shows it
    waiting = [r for r in caplog.records if lost in r.getMessage() and "waiting for resources" in r.getMessage()]
    assert waiting, "no line says that the lost camera waits for resources"
    assert waiting[0].created - seen.lost_at < WATCH_S
    assert any(s.source == lost and s.source_state == "waiting for resources" for s in view.states)
    # its windows after its last one with frames are gap rows on the run's grid, up to the stop
    mine = [r for r in seen.rows if r.source == lost]
    last_seen = max(i for i, r in enumerate(mine) if r.frames)
    gaps = mine[last_seen + 1:]
    assert gaps and all(r.status == "gap" and r.frames == 0 for r in gaps), [(r.status, r.frames) for r in gaps]
    for a, b in zip(mine, mine[1:], strict=False):
        assert a.window_end_utc == b.window_start_utc, (a, b)
    assert seen.stop_utc is not None and seen.lost_utc is not None
    assert utc(gaps[0].window_start_utc) <= seen.lost_utc + timedelta(seconds=1.5)
    assert abs((utc(gaps[-1].window_end_utc) - seen.stop_utc).total_seconds()) < 2.0
    assert run.source_states == {lost: "stopped", next(iter(flowing)): "stopped"}
    # and so in the CSV
    _, written = read_csv(csv_out)
    assert [(r["status"], r["window_start"]) for r in written if r["source"] == lost][-len(gaps):] == [
        ("gap", r.window_start_utc) for r in gaps
    ]


@pytest.mark.rtsp
def test_a_stop_ends_the_run_in_seconds_when_the_lost_node_had_the_classifier(
    rtsp_server: RtspServer, tiny_classifier_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1-CPU head and a 3-CPU node; the classifier (1.5 CPUs) fits only on the node, the two live cameras
    (1 CPU each) one on each node. The node dies with the classifier: neither can be placed again, and the
    camera left on the head cannot classify. Both show as waiting, and a stop still ends the run at once."""
    from edumood_live.cluster import ClusterConfig, ClusterRun

    csv_out = tmp_path / "rooms.csv"
    live = SourceConfig(rtsp_server.url, **FAST_LIVE)
    config = RunConfig(sources=(live, live), classifier=ClassifierConfig(model_path=tiny_classifier_path),
                       window_s=1.0, output=OutputConfig(csv_path=csv_out))
    view = LiveView()
    with nodes(1, 3) as (cluster, second), caplog.at_level(logging.WARNING, logger="edumood_live.cluster"):
        run = ClusterRun(config, ClusterConfig(poll_s=0.1, start_timeout_s=60.0, camera_cpus=1.0,
                                               classifier_cpus=1.5), sinks=[view])
        seen = lose_the_second_node(run, cluster, second)

    assert seen.ended_at - seen.stop_at < STOP_LIMIT_S, f"the stop took {seen.ended_at - seen.stop_at:.1f} s"
    states = {(s.source, s.source_state) for s in view.states}
    names = [c.name for c in run.cameras]
    said = [r.getMessage() for r in caplog.records if r.created < seen.stop_at]
    for state in ("waiting for resources", "waiting for the classifier"):
        shown = [name for name in names if (name, state) in states]
        assert len(shown) == 1, f"expected one camera shown {state!r}, got {shown}"
        assert any(shown[0] in line and state in line for line in said), f"no line says {shown[0]} is {state}"
    assert set(run.source_states.values()) == {"stopped"}
    _, written = read_csv(csv_out)
    assert {r["source"] for r in written if int(r["frames"])} == set(names)  # what it had is written
