"""Cluster mode on a real local Ray runtime (one per module: head on 127.0.0.1, 2 CPUs).

Two video files and a real RTSP stream on loopback run as three camera actors with one shared
batching classifier; their window rows are compared with single-process mode on the same files
(files are replayed in order, so the same frames are processed: same counts, same shares). The RTSP
camera's frames depend on timing, so its rows are checked for schema and health only. A camera actor
killed mid-run is restarted by Ray: the other cameras do not notice, and its outage shows as GAP rows
on the same window grid. Without Ray installed the Ray tests skip with the reason.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import check_row, read_csv, read_jsonl, run_cli, schema
from live_fixtures import CLIP, RtspServer, serve_rtsp

# Ray reads this when it is first imported: a runtime started here then binds to 127.0.0.1 only (Ray's
# switch for single-machine runtimes; on Linux it is otherwise on, binding to the host's address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
try:
    import ray
except ImportError:  # the optional `cluster` extra is not installed
    ray = None

from edumood_live import ClassifierConfig, ConfigError, OutputConfig, RunConfig, SourceConfig, SourceError  # noqa: E402
from edumood_live import run as run_single  # noqa: E402
from edumood_live.cluster.config import CLUSTER_COLUMNS, ClusterConfig, ClusterWindow  # noqa: E402
from edumood_live.types import WindowStatus, WindowSummary  # noqa: E402

pytestmark = pytest.mark.cluster
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install -e '.[cluster]')")

FILES = (SourceConfig("demo"), SourceConfig(str(CLIP), stride=2))  # 36 and 18 frames of the clip, 3 faces
FAST_LIVE = {"open_timeout_s": 10.0, "read_timeout_s": 1.0, "watchdog_s": 2.0, "backoff_initial_s": 0.2,
             "backoff_max_s": 1.0}
RUN_LIMIT_S = 90.0  # a cluster run that is not done by then is stopped, and the test fails
FAST_RTSP = {"OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp|analyzeduration;500000"}


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A real local Ray runtime for this module: 2 CPUs, no dashboard, on loopback; shut down after."""
    if ray is None:
        pytest.skip("ray is not installed (pip install -e '.[cluster]')")
    for key, value in FAST_RTSP.items():  # the runtime's workers inherit this process's environment
        os.environ.setdefault(key, value)
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                       logging_level="warning")
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[RtspServer]:
    yield from serve_rtsp(tmp_path)


def make_config(model: Path, sources: tuple, **kwargs: object) -> RunConfig:
    kwargs.setdefault("window_s", 1.0)
    return RunConfig(sources=sources, classifier=ClassifierConfig(model_path=model), **kwargs)  # type: ignore[arg-type]


def cluster_config(**kwargs: object) -> ClusterConfig:
    return ClusterConfig(poll_s=0.1, start_timeout_s=60.0, **kwargs)  # type: ignore[arg-type]


def seconds(summary: WindowSummary) -> float:
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00"))
                  for t in (summary.window_start_utc, summary.window_end_utc))
    return (end - start).total_seconds()


def comparable(summary: WindowSummary) -> tuple:
    """Everything in a row that does not depend on when the run started."""
    shares = tuple(round(v, 6) if v is not None else None for v in summary.shares.values())
    low = None if summary.low_confidence_share is None else round(summary.low_confidence_share, 6)
    return (summary.source, summary.status, summary.frames, round(seconds(summary), 3), round(summary.fps, 3),
            round(summary.faces_mean, 6), summary.tracks, shares, summary.dominant_label, low,
            summary.dropped_frames)


def by_source(rows: list[WindowSummary], source: str) -> list[WindowSummary]:
    return [r for r in rows if r.source == source]


def consume(run: object, until: Callable[[list[ClusterWindow]], bool], rows: list[ClusterWindow],
            on_row: Callable[[ClusterWindow], None] = lambda row: None) -> None:
    """Collect the rows of `run.run()`; `stop()` once `until(rows)` holds (or after RUN_LIMIT_S)."""
    limit = threading.Timer(RUN_LIMIT_S, run.stop)  # type: ignore[attr-defined]
    limit.start()
    try:
        for row in run.run():  # type: ignore[attr-defined]
            rows.append(row)
            on_row(row)
            if not run.stopping and until(rows):  # type: ignore[attr-defined]
                run.stop()  # type: ignore[attr-defined]
    finally:
        timed_out = not limit.is_alive()
        limit.cancel()
    assert not timed_out, f"the cluster run did not finish within {RUN_LIMIT_S} s"


@pytest.fixture(scope="module")
def single_rows(tiny_classifier_path: Path) -> list[WindowSummary]:
    """Single-process rows for the two files: the reference for the cluster runs."""
    return run_single(make_config(tiny_classifier_path, FILES))


# ----------------------------------------------------------------------------- configuration (no Ray)


@pytest.mark.parametrize(
    ("node_cpus", "actors", "share"),
    [
        ([1, 2], 3, 0.33),  # 2 cameras + 1 classifier: after losing the 2-CPU node all three fit on the head
        ([1, 2], 4, 0.25),
        ([4], 3, 1.0),  # one node: nothing to fall back on, the fitting share
        ([2, 2, 2], 6, 0.66),
    ],
)
def test_the_default_share_leaves_room_for_the_loss_of_a_node(node_cpus: list[float], actors: int,
                                                               share: float) -> None:
    from edumood_live.cluster.placement import resilient_share

    assert resilient_share(node_cpus, actors) == share


@pytest.mark.parametrize(
    ("node_cpus", "actors", "share"),
    [
        ([1, 2], 4, 0.66),  # 3 cameras + 1 classifier on a 1-CPU head and a 2-CPU node: 3/4 = 0.75 would hang
        ([1, 2], 3, 1.0),
        ([3], 4, 0.75),
        ([2], 5, 0.4),
        ([16], 100, 0.16),
        ([0, 4], 2, 1.0),  # a node without CPUs takes nothing
    ],
)
def test_the_cpu_share_fits_node_by_node(node_cpus: list[float], actors: int, share: float) -> None:
    from edumood_live.cluster.placement import fitting_share

    assert fitting_share(node_cpus, actors) == share
    assert sum(int(c / share + 1e-9) for c in node_cpus) >= actors


def test_configs_and_rows_are_picklable(tiny_classifier_path: Path) -> None:
    config = make_config(tiny_classifier_path, (*FILES, SourceConfig("rtsp://127.0.0.1:8554/x", **FAST_LIVE)),
                         output=OutputConfig(csv_path=Path("rows.csv")))
    cluster = ClusterConfig(address="ray://head:10001", classifier_replicas="per-node", camera_cpus=1)
    row = ClusterWindow("demo", "a", "b", WindowStatus.OK, 3, 1.0, 3.0, 3, {"Angry": 1.0}, 0.0, "Angry", 0.1,
                        0, node="10.0.0.7", actor="cam0#1")
    for value in (config, cluster, row):
        assert pickle.loads(pickle.dumps(value)) == value
    assert list(row.to_row())[-2:] == list(CLUSTER_COLUMNS) and row.to_row()["actor"] == "cam0#1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"address": " "}, r"address=' ' is not allowed; use None \(start Ray here\), 'auto'"),
        ({"camera_cpus": 0}, r"camera_cpus=0 is not allowed; use a number in \(0, 256\] or None"),
        ({"classifier_replicas": 0}, r"classifier_replicas=0 .* integer >= 1 or 'per-node'"),
        ({"classifier_replicas": "all"}, "classifier_replicas='all'"),
        ({"max_batch_faces": 0}, "max_batch_faces=0"),
        ({"batch_wait_ms": -1}, r"batch_wait_ms=-1 .* \[0, 1000\]"),
        ({"max_restarts": -2}, r"max_restarts=-2 .* >= -1"),
        ({"poll_s": 0}, "poll_s=0"),
        ({"max_batch_faces": 1.5}, r"max_batch_faces=1\.5 is not allowed; use an integer >= 1"),
        ({"num_cpus": "4"}, r"num_cpus='4' is not allowed; use an integer >= 1 or None"),
        ({"classifier_gpus": True}, r"classifier_gpus=True is not allowed; use a number in \[0, 16\]"),
        ({"start_timeout_s": float("inf")}, r"start_timeout_s=inf is not allowed; use a finite number > 0"),
    ],
)
def test_cluster_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ClusterConfig(**kwargs)


@needs_ray
@pytest.mark.parametrize(
    ("output", "match"),
    [({"annotate_path": "a.mp4"}, "only window rows leave the camera workers"), ({"csv_path": "r.csv",
      "per_track": True}, "per_track=True is not allowed in cluster mode")],
)
def test_outputs_that_cannot_leave_a_camera_worker_are_refused(tiny_classifier_path: Path, output: dict,
                                                               match: str) -> None:
    from edumood_live.cluster import ClusterRun

    config = make_config(tiny_classifier_path, FILES[:1], output=OutputConfig(**output))
    with pytest.raises(ConfigError, match=match):
        ClusterRun(config, cluster_config())  # refused before Ray is touched


def test_single_process_mode_never_imports_ray(tiny_classifier_path: Path, tmp_path: Path) -> None:
    args = ["--source", "demo", "--duration", "0.5", "--no-console", "--model", str(tiny_classifier_path),
            "--csv", str(tmp_path / "out.csv")]
    code = (
        f"import sys; from edumood_live.cli import main; status = main({args!r}); "
        "assert status == 0, status; assert 'ray' not in sys.modules, 'single-process mode imported ray'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- batching (no Ray runtime)


@needs_ray
def test_batching_classifier_merges_crops_across_cameras(tiny_classifier_path: Path,
                                                         demo_frames: list[np.ndarray]) -> None:
    from edumood_live.classifier import FaceClassifier
    from edumood_live.cluster.classifier_actor import BatchingClassifier, BatchStats

    config = ClassifierConfig(model_path=tiny_classifier_path)
    boxes = np.float32([[196, 72, 259, 135], [60, 80, 120, 140]])
    with FaceClassifier(config) as local:
        batches = [local.preprocess(frame, boxes) for frame in demo_frames[:6]]
        expected = [local.classify_batch(b) for b in batches]

    async def send(batcher: BatchingClassifier, cameras: list[str]) -> tuple[list[np.ndarray], BatchStats]:
        pairs = zip(batches, cameras, strict=True)
        probs = await asyncio.gather(*(batcher.classify(b, c) for b, c in pairs))  # all queued at once
        return probs, await batcher.stats()

    cameras = ["cam0", "cam1", "cam2"] * 2
    probs, stats = asyncio.run(send(BatchingClassifier(config, max_batch_faces=256), cameras))
    for got, want in zip(probs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (stats.calls, stats.requests, stats.faces, stats.max_cameras) == (1, 6, 12, 3)

    _, capped = asyncio.run(send(BatchingClassifier(config, max_batch_faces=4), cameras))  # 2 requests a call
    assert (capped.calls, capped.max_faces) == (3, 4)


@needs_ray
def test_a_batch_waits_for_cameras_heard_from_but_never_for_a_lone_one(tiny_classifier_path: Path,
                                                                      demo_frames: list[np.ndarray]) -> None:
    from edumood_live.classifier import FaceClassifier
    from edumood_live.cluster.classifier_actor import BatchingClassifier

    config = ClassifierConfig(model_path=tiny_classifier_path)
    with FaceClassifier(config) as local:
        batch = local.preprocess(demo_frames[0], np.float32([[196, 72, 259, 135]]))
    batcher = BatchingClassifier(config, batch_wait_ms=1000)

    async def scenario() -> tuple[float, int]:
        t0 = time.monotonic()
        await batcher.classify(batch, "cam0")  # alone: answered at once, not after the 1 s wait
        alone_s = time.monotonic() - t0
        await asyncio.gather(batcher.classify(batch, "cam0"), batcher.classify(batch, "cam1"))
        calls = (await batcher.stats()).calls
        first = asyncio.ensure_future(batcher.classify(batch, "cam0"))  # cam1 was heard: wait for it
        await asyncio.sleep(0.05)
        await asyncio.gather(first, batcher.classify(batch, "cam1"))
        return alone_s, (await batcher.stats()).calls - calls

    alone_s, calls = asyncio.run(scenario())
    assert alone_s < 0.5, alone_s
    assert calls == 1  # the two cameras' crops, 50 ms apart, went into one model call


# ----------------------------------------------------------------------------- on a real Ray runtime


@needs_ray
@pytest.mark.rtsp
class LiveView:
    """A real live sink that keeps the states it is shown."""

    def __init__(self) -> None:
        self.states: list = []

    def write(self, summary: WindowSummary) -> None:
        pass

    def update(self, state: object) -> None:
        self.states.append(state)

    def close(self) -> None:
        pass


def test_three_cameras_give_the_rows_of_a_single_process_run(
    ray_address: str, rtsp_server: RtspServer, tiny_classifier_path: Path, single_rows: list[WindowSummary],
    tmp_path: Path,
) -> None:
    from edumood_live.cluster import ClusterRun

    csv_out, jsonl_out = tmp_path / "rooms.csv", tmp_path / "rooms.jsonl"
    live = SourceConfig(rtsp_server.url, **FAST_LIVE)
    config = make_config(tiny_classifier_path, (*FILES, live),
                         output=OutputConfig(csv_path=csv_out, jsonl_path=jsonl_out))
    view = LiveView()
    run = ClusterRun(config, cluster_config(), sinks=[view])
    names = [camera.name for camera in run.cameras]
    assert names == ["demo", str(CLIP), rtsp_server.url]
    assert "3 camera worker(s) on Ray (127.0.0.1)" in run.describe()

    def enough(rows: list[ClusterWindow]) -> bool:  # both files done and two live windows with frames
        files_done = all(run.source_states.get(name) == "ended" for name in names[:2])
        return files_done and sum(1 for r in by_source(rows, names[2]) if r.frames) >= 2

    rows: list[ClusterWindow] = []
    consume(run, enough, rows)
    assert run.source_states == {names[0]: "ended", names[1]: "ended", names[2]: "stopped"}

    # Files: exactly the single-process rows (same frames, counts, shares); `actor` names the worker.
    for index, name in enumerate(names[:2]):
        expected = [comparable(r) for r in by_source(single_rows, name)]
        assert [comparable(r) for r in by_source(rows, name)] == expected
        assert {(r.node, r.actor) for r in by_source(rows, name)} == {("127.0.0.1", f"cam{index}#0")}
    # The live view of an ended file says "ended" and keeps its last window's values (as a single process)
    for name in names[:2]:
        last_state = [v for v in view.states if v.source == name][-1]
        last_row = [r for r in by_source(rows, name) if r.frames][-1]
        assert last_state.source_state == "ended" and last_state.faces == round(last_row.faces_mean)
    # RTSP: timing decides which frames are seen, so only health and schema are compared.
    live_rows = by_source(rows, names[2])
    assert live_rows[-1].status in (WindowStatus.PARTIAL, WindowStatus.OK)  # stopped mid-window, usually
    assert all(r.actor == "cam2#0" for r in live_rows)
    for row in live_rows[:-1]:
        assert row.status == WindowStatus.OK and row.frames > 0
        assert row.faces_mean == pytest.approx(3, abs=0.5)

    labels = list(run.labels)
    header, csv_rows = read_csv(csv_out)
    assert header == [*schema(labels), "node", "actor"]
    assert [r["actor"] for r in csv_rows] == [r.actor for r in rows]
    for row in csv_rows:
        check_row(row, labels, faces=None)
    records = read_jsonl(jsonl_out)
    assert [list(r) for r in records] == [header] * len(rows)

    batching = run.stats["batching"]
    assert batching["faces"] >= 3 * (36 + 18) - 6 and batching["calls"] <= batching["requests"]  # type: ignore[index,operator]


@needs_ray
@pytest.mark.rtsp
def test_a_killed_camera_actor_is_restarted_and_its_gap_shows(
    ray_address: str, rtsp_server: RtspServer, tiny_classifier_path: Path, single_rows: list[WindowSummary],
) -> None:
    from edumood_live.cluster import ClusterRun

    paced = (replace(FILES[0], max_fps=6.0), replace(FILES[1], max_fps=3.0))  # both files last 6 s
    config = make_config(tiny_classifier_path, (*paced, SourceConfig(rtsp_server.url, **FAST_LIVE)),
                         window_s=0.5)
    run = ClusterRun(config, cluster_config())
    live_name = run.cameras[2].name
    killed_at: list[int] = []  # index in rows when the RTSP worker was killed

    def on_row(row: ClusterWindow) -> None:
        if not killed_at and row.source == live_name and row.frames > 0:
            os.kill(run.cameras[2].pid, signal.SIGKILL)  # the camera actor's worker process dies
            killed_at.append(len(rows))

    def back(rows: list[ClusterWindow]) -> bool:  # files done; the restarted camera delivers frames again
        files_done = all(run.source_states.get(c.name) == "ended" for c in run.cameras[:2])
        return files_done and any(r.actor == "cam2#1" and r.frames > 0 for r in rows)

    rows: list[ClusterWindow] = []
    consume(run, back, rows, on_row)
    assert killed_at, "the RTSP camera never delivered a window with frames"

    live_rows = by_source(rows, live_name)
    assert [c.restarts for c in run.cameras] == [0, 0, 1]
    before = [r for r in live_rows if r.actor == "cam2#0"]
    after = [r for r in live_rows if r.actor == "cam2#1"]
    assert before and after and live_rows == before + after
    for a, b in zip(live_rows, live_rows[1:], strict=False):  # one grid: no window lost or repeated
        assert a.window_end_utc == b.window_start_utc, (a, b)
    # the outage is gap rows, not invented data: written by the driver while no worker answered (node
    # empty), then by the new worker until its camera delivered again
    last_before = max(i for i, r in enumerate(live_rows) if r.actor == "cam2#0" and r.frames > 0)
    first_back = next(i for i, r in enumerate(live_rows) if r.actor == "cam2#1" and r.frames > 0)
    gaps = live_rows[last_before + 1:first_back]
    assert gaps and all(r.status == WindowStatus.GAP and r.frames == 0 for r in gaps)
    assert all(r.node == "" for r in gaps if r.actor == "cam2#0")
    # The other cameras did not notice: rows went on during the outage, same values as one process.
    outage = rows[killed_at[0]:rows.index(live_rows[first_back])]
    assert any(r.source != live_name for r in outage), "the other cameras stalled while one was down"
    for camera in run.cameras[:2]:
        assert [comparable(r) for r in by_source(rows, camera.name)] == [
            comparable(r) for r in run_single(make_config(tiny_classifier_path, (FILES[camera.index],),
                                                          window_s=0.5))
        ]
        assert {r.actor for r in by_source(rows, camera.name)} == {f"cam{camera.index}#0"}


@needs_ray
def test_a_camera_that_cannot_be_opened_fails_before_the_run(ray_address: str, tiny_classifier_path: Path,
                                                             tmp_path: Path) -> None:
    from edumood_live.cluster import ClusterRun

    out = tmp_path / "kept.csv"
    out.write_text("precious\n")
    config = make_config(tiny_classifier_path, (FILES[0], str(tmp_path / "missing.mp4")),
                         output=OutputConfig(csv_path=out))
    with pytest.raises(SourceError, match="no such file"):
        ClusterRun(config, cluster_config())
    assert out.read_text() == "precious\n"
    assert ray.is_initialized()  # a runtime this process did not start is left running


@needs_ray
def test_cli_joins_a_running_cluster(ray_address: str, tiny_classifier_path: Path, tmp_path: Path,
                                     single_rows: list[WindowSummary]) -> None:
    csv_out = tmp_path / "rooms.csv"
    proc = run_cli("--ray", ray_address, "--source", "demo", "--model", tiny_classifier_path,
                   "--csv", csv_out, "--window", "1", "--no-console")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "camera worker(s) on Ray" in proc.stderr and "Traceback" not in proc.stderr
    header, rows = read_csv(csv_out)
    assert header == [*schema(model_labels_of(single_rows)), "node", "actor"]
    expected = by_source(single_rows, "demo")
    assert [(r["status"], int(r["frames"]), float(r["faces_mean"])) for r in rows] == [
        (s.status, s.frames, round(s.faces_mean, 3)) for s in expected
    ]
    assert {(r["node"], r["actor"]) for r in rows} == {("127.0.0.1", "cam0#0")}



def classifier_actors() -> list[str]:
    """Names of the live classifier workers of any cluster run on this runtime."""
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "-classifier" in a["name"]]


@needs_ray
def test_attention_alone_starts_no_classifier_and_opens_no_model(ray_address: str, tmp_path: Path) -> None:
    """``--signals attention`` on Ray: like a single process, no model is opened (here it does not even
    exist) and no classifier worker runs; the camera workers give the single-process attention rows."""
    from edumood_live.cluster import ClusterRun

    csv_out, missing = tmp_path / "attention.csv", tmp_path / "no-such-model.onnx"
    config = make_config(missing, (FILES[0],), signals="attention", output=OutputConfig(csv_path=csv_out))
    run = ClusterRun(config, cluster_config())
    assert run.labels == ()
    assert "no expression classifier; signals attention;" in run.describe()
    seen: list[list[str]] = []  # the classifier workers alive while each row arrives
    rows: list[ClusterWindow] = []
    consume(run, lambda rows: False, rows, on_row=lambda row: seen.append(classifier_actors()))
    assert rows and seen == [[]] * len(rows)
    assert run.source_states == {"demo": "ended"} and run.stats["classifiers"] == []

    single = run_single(make_config(missing, (FILES[0],), signals="attention"))
    assert [(comparable(r), r.attention_share) for r in rows] == [(comparable(r), r.attention_share) for r in single]
    assert all(r.shares == {} and r.dominant_label is None for r in rows)
    header, csv_rows = read_csv(csv_out)
    assert header == [*schema([]), "node", "actor"]
    assert not [c for c in header if c.startswith("share_")]
    with_faces = [r for r in csv_rows if int(r["frames"])]
    assert with_faces and all(0.0 <= float(r["attention_share"]) <= 1.0 for r in with_faces)


@needs_ray
@pytest.mark.parametrize(("signals", "replicas", "camera_cpus"), [("attention", 0, 0.66), ("expressions", 1, 0.5)])
def test_cpu_shares_count_classifier_workers_only_when_expressions_run(
    ray_address: str, tiny_classifier_path: Path, signals: str, replicas: int, camera_cpus: float
) -> None:
    from edumood_live.cluster.placement import plan

    layout = plan(make_config(tiny_classifier_path, (FILES[0],) * 3, signals=signals), cluster_config())
    assert (len(layout.strategies), layout.camera_cpus) == (replicas, camera_cpus)  # 2 CPUs for 3 or 4 workers


@needs_ray
def test_expressions_alone_gives_class_shares_without_attention(
    ray_address: str, tiny_classifier_path: Path, single_rows: list[WindowSummary]
) -> None:
    from edumood_live.cluster import ClusterRun

    config = make_config(tiny_classifier_path, (FILES[0],), signals="expressions")
    run = ClusterRun(config, cluster_config())
    assert run.labels == tuple(model_labels_of(single_rows)) and "signals expressions;" in run.describe()
    seen: list[list[str]] = []
    rows: list[ClusterWindow] = []
    consume(run, lambda rows: False, rows, on_row=lambda row: seen.append(classifier_actors()))
    assert seen and all(len(names) == 1 for names in seen)  # the shared classifier worker runs
    assert [comparable(r) for r in rows] == [comparable(r) for r in by_source(single_rows, "demo")]
    assert all(r.attention_share is None for r in rows)


def model_labels_of(rows: list[WindowSummary]) -> list[str]:
    return list(rows[0].shares)
