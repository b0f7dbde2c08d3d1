"""End-to-end speed of EduMood Live against a naive loop and a peer (`fer`), on real footage (DESIGN §4).

Run from the repository root (the machine otherwise idle):

    python -m benchmarks.bench_pipeline                      # everything, ~10 min on 2 cores
    python -m benchmarks.bench_pipeline --quick              # smoke test: a few frames of each

Inputs: (a) the 3-face clip ``shared/media/videos/test_clip_small.mp4`` (480x270, 12 fps, looped);
(b) the 3x3 gallery videos of the real clips at 1280x720 and 1920x1080, 30 fps (benchmarks/gallery.py
builds them into benchmarks/work/); (c) the 43-face dlib-photo mosaic (benchmarks/mosaic.py) as a still
30 fps stream. Sections: per-stage ms/frame and fps, replay (files at full speed) and live (a paced,
looping file-backed camera through `LiveSource`, latest-frame semantics; capture-to-processed and
capture-to-row latency); the naive loop (whole-frame detection, one classifier call per face, no
tracking); detect-every-K; onnxruntime threads and spinning; classifier ms/face per batch; detection
recall per tiling (benchmarks.bench_detection); the peer `fer` run from its own venv
(benchmarks/setup_peer.sh) on the same videos; peak memory. Prints tables and writes
benchmarks/results/pipeline_<UTC time>.json (+ the peer's JSON next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks import bench_detection
from benchmarks.fake_camera import PacedCapture, video_fps
from benchmarks.gallery import SMALL_CLIP, ensure_galleries, media_missing_reason
from benchmarks.harness import (
    LoopingFileSource,
    Setup,
    StillSource,
    TimedClassifier,
    busy_processes,
    default_model,
    machine_extra,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    run_config,
    run_pipeline,
)
from benchmarks.mosaic import FACES_DLIB_DIR, build_mosaic, load_dlib_faces
from edumood_live.classifier import ClassifierConfig
from edumood_live.detector import DetectorConfig, FaceDetector
from edumood_live.errors import ModelError
from edumood_live.resources import classifier_path, shipped_classifier_path
from edumood_live.sources import Source, SourceConfig, open_source

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "work"
FER_PYTHON = WORK_DIR / "fer-venv" / "bin" / "python"
STAGES = ("decode", "detect", "crop", "classify", "track_aggregate", "sinks", "other")
WINDOW_S = 2.0  # short windows so a live run closes several rows (row latency)


@dataclass(frozen=True)
class Input:
    """One benchmark input: a video file or a still image (the mosaic), and the face size it needs."""

    key: str
    label: str
    fps: float
    min_face: int  # --min-face of the speed mode (drives tiles=auto)
    replay_frames: int
    recall_min_face: int | None = None  # a smaller --min-face that finds more of its faces (slower)
    path: Path | None = None
    image: np.ndarray | None = None
    expected_faces: int | None = None

    def replay_source(self, frames: int) -> Source:
        if self.path is not None:
            loops = None if frames else 1
            return LoopingFileSource(self.path, loops=loops, max_frames=frames or None)
        assert self.image is not None
        return StillSource(self.image, frames, self.fps, name=self.key)

    def live_source(self) -> Source:
        def capture() -> PacedCapture:
            return (
                PacedCapture(self.path, self.fps) if self.path else PacedCapture(image=self.image, fps=self.fps)
            )

        return open_source(SourceConfig(spec="webcam", read_timeout_s=5.0), capture_factory=capture)


def build_inputs(quick: bool) -> list[Input]:
    galleries = ensure_galleries()
    photos = load_dlib_faces()
    scale = 0.1 if quick else 1.0
    frames = {"clip": int(360 * scale), "gallery": int(300 * scale), "mosaic": int(150 * scale)}
    inputs = [
        Input("clip", "3-face clip 480x270@12", 12.0, 32, frames["clip"], path=SMALL_CLIP, expected_faces=3),
        Input("gallery720", "gallery 1280x720@30", 30.0, 32, frames["gallery"], recall_min_face=24,
              path=galleries[(1280, 720)], expected_faces=19),
        Input("gallery1080", "gallery 1920x1080@30", 30.0, 32, frames["gallery"], recall_min_face=24,
              path=galleries[(1920, 1080)], expected_faces=19),
        Input("mosaic720", "mosaic 1280x720 (still)", 30.0, 20, frames["mosaic"],
              image=build_mosaic(photos, 1280, 720).image, expected_faces=43),
    ]  # fmt: skip
    for item in inputs:
        if item.path is not None:
            assert abs(video_fps(item.path) - item.fps) < 0.5, f"{item.path} is not {item.fps} fps"
    return inputs


def exact_setup() -> Setup:
    """Exact mode (the CLI's defaults before 0.2): detector on every frame, one worker, one ORT thread."""
    return Setup("exact")


def default_setup(item: Input) -> Setup:
    """The CLI's defaults (K auto, two detector workers, two ORT threads), tiles for the input's faces.

    Results files before 2026-11-24T12 call this setup ``auto2t`` (and the exact mode ``default``).
    """
    return Setup("default", detect_every="auto", workers=2, threads=2, min_face=item.min_face)


def fast_setup(item: Input, **changes: Any) -> Setup:
    """The speed mode: detector every 3rd frame on two instances, tiles for the input's faces."""
    return replace(Setup("fast", detect_every=3, workers=2, min_face=item.min_face), **changes)


# --------------------------------------------------------------------------------------- naive loop


def run_naive(item: Input, model: Path, frames: int) -> dict[str, Any]:
    """Whole-frame detection, one classifier call per face, no tracking, no aggregation."""
    times = dict.fromkeys(("decode", "detect", "crop", "classify"), 0.0)
    faces = n = 0
    det = FaceDetector(DetectorConfig(tiles="1x1"))
    clf = TimedClassifier(ClassifierConfig(model_path=model, device="cpu"))
    source = item.replay_source(frames)
    started = time.perf_counter()
    cpu0 = time.process_time()
    while True:
        t0 = time.perf_counter()
        frame = source.read(1.0)
        t1 = time.perf_counter()
        if frame is None:
            break
        boxes = det.detect(frame.image).boxes
        t2 = time.perf_counter()
        for box in boxes:
            clf.classify(frame.image, box[None])
        t3 = time.perf_counter()
        times["decode"] += t1 - t0
        times["detect"] += t2 - t1
        times["classify"] += t3 - t2
        faces += len(boxes)
        n += 1
    wall = time.perf_counter() - started
    cpu_ms = 1000.0 * (time.process_time() - cpu0) / max(n, 1)
    det.close()
    clf.close()
    source.close()
    times["crop"] = clf.preprocess_s
    times["classify"] -= times["crop"]
    ms = {k: 1000.0 * v / max(n, 1) for k, v in times.items()}
    ms.update(track_aggregate=0.0, sinks=0.0)
    ms["other"] = max(1000.0 * wall / max(n, 1) - sum(ms.values()), 0.0)
    return {
        "frames": n,
        "wall_s": wall,
        "fps": n / wall,
        "x_realtime": n / wall / item.fps,
        "faces_per_frame": faces / max(n, 1),
        "ms": ms,
        "ms_total": 1000.0 * wall / max(n, 1),
        "detected_frames": n,
        "dropped": 0,
        "cpu_ms_per_frame": cpu_ms,
        "load_1m_after": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------------------- sections


def shipped_fast_model() -> Path | None:
    """The shipped fast classifier (`--model fast`), when this checkout has it."""
    try:
        return shipped_classifier_path("fast")
    except ModelError:
        return None


def replay(item: Input, setup: Setup, model: Path, frames: int | None = None, console: bool = True) -> dict[str, Any]:
    frames = item.replay_frames if frames is None else frames
    config = run_config(setup, model, item.key, WORK_DIR / "out", WINDOW_S)
    result = run_pipeline(config, item.replay_source(frames), item.fps, console=console)
    return {"input": item.key, "mode": "replay", **setup.describe(), "console": console, **result}


def live(item: Input, setup: Setup, model: Path, seconds: float) -> dict[str, Any]:
    config = run_config(setup, model, item.key, WORK_DIR / "out", WINDOW_S, duration_s=seconds)
    result = run_pipeline(config, item.live_source(), item.fps)
    return {"input": item.key, "mode": "live", **setup.describe(), **result}


def section_stages(
    inputs: list[Input], model: Path, live_s: float, log: Console, fast_model: Path | None = None
) -> list[dict[str, Any]]:
    """Per-stage ms/frame: naive, CLI defaults and the speed mode (replay); live: those, and the defaults
    with the detector in line instead of in the background (the latency it costs). With `fast_model`,
    also the defaults with that model (setup ``fastmodel``), replay and live."""
    rows = []
    for item in inputs:
        naive = run_naive(item, model, item.replay_frames)
        rows.append(
            {
                "input": item.key,
                "mode": "replay",
                "setup": "naive",
                "K": 1,
                "workers": 1,
                "threads": 1,
                "tiles": "1x1",
                "min_face": "-",
                "spinning": False,
                "peak_rss_mb": None,
                **naive,
            }
        )
        log.print(f"  {item.key} naive: {naive['fps']:.1f} fps")
        setups = [exact_setup(), default_setup(item), fast_setup(item)]
        if item.recall_min_face is not None:
            setups.append(fast_setup(item, name="recall", min_face=item.recall_min_face))
        for setup in setups:
            rows.append(replay(item, setup, model))
            log.print(f"  {item.key} {setup.name} replay: {rows[-1]['fps']:.1f} fps")
        inline = replace(setups[1], name="inline", background=False)  # the defaults, detector in line
        for setup in [*setups[1:], inline]:
            rows.append(live(item, setup, model, live_s))
            log.print(f"  {item.key} {setup.name} live: {rows[-1]['fps']:.1f} fps, dropped {rows[-1]['dropped']}")
        if fast_model is not None:
            setup = replace(setups[1], name="fastmodel")
            rows += [replay(item, setup, fast_model), live(item, setup, fast_model, live_s)]
            log.print(f"  {item.key} fastmodel: replay {rows[-2]['fps']:.1f} fps, live {rows[-1]['fps']:.1f} fps")
    return rows


def section_detect_every(inputs: list[Input], model: Path, log: Console) -> list[dict[str, Any]]:
    """fps and faces per frame for K = 1, 2, 3, 5 (two detector workers), plus K=3 on one worker."""
    rows = []
    for item in inputs:
        if item.key == "clip":
            continue
        for k, workers, console in ((1, 2, True), (2, 2, True), (3, 2, True), (5, 2, True), (3, 1, True),
                                    (3, 2, False)):  # fmt: skip
            setup = fast_setup(item, detect_every=k, workers=workers, name=f"K{k}w{workers}")
            rows.append(replay(item, setup, model, console=console))
            log.print(f"  {item.key} K={k} w={workers} console={console}: {rows[-1]['fps']:.1f} fps")
    return rows


def section_onnxruntime(inputs: list[Input], model: Path, repeats: int, log: Console) -> list[dict[str, Any]]:
    """Classifier threads x spinning: ms/face alone (batch 32) and end-to-end fps of the speed mode."""
    from edumood_live.classifier import FaceClassifier

    gallery = next(i for i in inputs if i.key == "gallery720")
    photos = load_dlib_faces()
    mosaic = build_mosaic(photos, 1280, 720)
    boxes = np.resize(mosaic.boxes, (32, 4)).astype(np.float32)
    rows = []
    for threads, spinning in ((1, False), (2, False), (2, True)):
        with FaceClassifier(
            ClassifierConfig(model_path=model, device="cpu", intra_op_threads=threads, allow_spinning=spinning)
        ) as clf:
            ms, _, cpu = bench_detection.time_ms(lambda c=clf: c.classify(mosaic.image, boxes), repeats * 10)
        e2e = replay(
            gallery,
            fast_setup(gallery, threads=threads, spinning=spinning, name=f"t{threads}s{int(spinning)}"),
            model,
        )
        rows.append(
            {
                "threads": threads,
                "spinning": spinning,
                "classify_ms_per_face_b32": ms / 32,
                "classify_cpu_ms_per_face_b32": cpu / 32,
                "gallery720_fps": e2e["fps"],
                "gallery720_detect_ms": e2e["ms"]["detect"],
                "gallery720_classify_ms": e2e["ms"]["classify"],
            }
        )
        log.print(f"  threads {threads} spinning {spinning}: {rows[-1]['gallery720_fps']:.1f} fps")
    return rows


def section_tiling(repeats: int, log: Console) -> list[dict[str, Any]]:
    """Recall vs time per tiling on the mosaics (benchmarks.bench_detection), plus tiles without the
    whole-frame pass on two workers."""
    photos = load_dlib_faces()
    rows = bench_detection.bench_detection(photos, repeats)
    for size in ((1280, 720), (1920, 1080)):
        mosaic = build_mosaic(photos, *size)
        for tiles in ("6x4", "auto"):
            with FaceDetector(
                DetectorConfig(tiles=tiles, min_face_px=bench_detection.MIN_FACE_PX, workers=2, whole_frame=False)
            ) as det:
                found = bench_detection.count_matched(mosaic.boxes, det.detect(mosaic.image).boxes)
                median, fastest, cpu = bench_detection.time_ms(lambda d=det, m=mosaic: d.detect(m.image), repeats)
                rows.append(
                    {
                        "frame": f"{size[0]}x{size[1]}",
                        "tiles": f"{tiles} no-whole",
                        "grid_cxr": "{1}x{0}".format(*det.grid_for(*size)),
                        "regions": len(det.regions_for(*size)),
                        "workers": 2,
                        "found": found,
                        "faces": len(mosaic.boxes),
                        "recall": found / len(mosaic.boxes),
                        "ms_per_frame": median,
                        "ms_per_frame_min": fastest,
                        "cpu_ms_per_frame": cpu,
                    }
                )
    for row in rows:
        row["fps"] = 1000.0 / row["ms_per_frame"]
    log.print(f"  {len(rows)} tiling rows")
    return rows


def conv_mflop_per_face(model: Path) -> float | None:
    """Multiply-adds x 2 of the model's Conv/Gemm layers for one face (needs the `onnx` package)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    weights = {w.name: list(w.dims) for w in graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output})
    flops = 0
    for node in graph.node:
        w, out = weights.get(node.input[1]) if len(node.input) > 1 else None, shapes.get(node.output[0])
        if node.op_type == "Conv" and w and out and len(out) == 4:
            flops += 2 * out[2] * out[3] * w[0] * w[1] * w[2] * w[3]
        elif node.op_type == "Gemm" and w:
            flops += 2 * w[0] * w[1]
    return flops / 1e6


def section_peer(inputs: list[Input], out: Path, max_frames: int, log: Console) -> dict[str, Any] | None:
    """Run benchmarks/bench_peer_fer.py in the fer venv on the same videos; its JSON."""
    if not FER_PYTHON.is_file():
        log.print(f"  peer skipped: {FER_PYTHON} missing (run: bash benchmarks/setup_peer.sh)")
        return None
    videos = [str(i.path) for i in inputs if i.path is not None]
    cmd = [
        str(FER_PYTHON),
        str(BENCH_DIR / "bench_peer_fer.py"),
        *videos,
        "--out",
        str(out),
        "--max-frames",
        str(max_frames),
        "--min-frames",
        str(min(120, max_frames)),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        log.print(f"  peer failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.read_text())


def section_memory(inputs: list[Input], model: Path, log: Console) -> dict[str, Any]:
    """Python-heap peak (tracemalloc) of a speed-mode replay, and the process's peak RSS so far."""
    gallery = next(i for i in inputs if i.key == "gallery720")
    tracemalloc.start()
    try:
        result = replay(gallery, fast_setup(gallery), model, frames=min(gallery.replay_frames, 150))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    import resource

    info = {
        "tracemalloc_peak_mb": peak / 2**20,
        "tracemalloc_end_mb": current / 2**20,
        "run_peak_rss_mb": result["peak_rss_mb"],
        "process_rss_mb": rss_mb(),
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "fps_under_tracemalloc": result["fps"],
    }
    log.print(f"  tracemalloc peak {info['tracemalloc_peak_mb']:.1f} MB")
    return info


# --------------------------------------------------------------------------------------- report


def ratios(stages: list[dict[str, Any]], peer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Defaults (both shipped models), speed and recall modes vs the naive loop and vs fer, per input."""
    by = {(r["input"], r["setup"], r["mode"]): r for r in stages}
    peer_by = {v["video"]: v for v in (peer or {}).get("videos", [])}
    out = []
    for (key, setup, mode), row in by.items():
        if setup not in ("default", "fastmodel", "fast", "recall") or mode != "replay":
            continue
        naive = by[(key, "naive", "replay")]
        item = {
            "input": key,
            "setup": setup,
            "ours_fps": row["fps"],
            "ours_faces": row["faces_per_frame"],
            "naive_fps": naive["fps"],
            "naive_faces": naive["faces_per_frame"],
            "fps_vs_naive": row["fps"] / naive["fps"],
            "faces_vs_naive": row["faces_per_frame"] / max(naive["faces_per_frame"], 1e-9),
            "face_rate_vs_naive": row["fps"]
            * row["faces_per_frame"]
            / max(naive["fps"] * naive["faces_per_frame"], 1e-9),
        }
        video = {
            "clip": SMALL_CLIP.name,
            "gallery720": "gallery_1280x720.mp4",
            "gallery1080": "gallery_1920x1080.mp4",
        }.get(key)
        if video in peer_by:
            fer = peer_by[video]
            item.update(
                fer_fps=fer["fps"],
                fer_faces=fer["faces_per_frame_mean"],
                fps_vs_fer=row["fps"] / fer["fps"],
                faces_vs_fer=row["faces_per_frame"] / max(fer["faces_per_frame_mean"], 1e-9),
                face_rate_vs_fer=row["fps"]
                * row["faces_per_frame"]
                / max(fer["fps"] * fer["faces_per_frame_mean"], 1e-9),
            )
        out.append(item)
    return out


def targets(
    stages: list[dict[str, Any]],
    tiling: list[dict[str, Any]],
    classifier: list[dict[str, Any]],
    kstudy: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    by = {(r["input"], r["setup"], r["mode"]): r for r in stages}
    rows = []

    def add(target: str, measured: str, met: bool | None, note: str = "") -> None:
        rows.append({"target": target, "measured": measured, "met": met, "note": note})

    for setup, model in (("default", "default model"), ("fastmodel", "fast model")):
        lg = by.get(("gallery720", setup, "live"))
        if lg:
            add(
                f"720p gallery >= 9 faces, >= 30 fps live ({model})",
                f"{lg['fps']:.1f} fps, {lg['faces_per_frame']:.1f} faces, "
                f"{lg['dropped']} dropped of {lg.get('source_frames')}",
                lg["fps"] >= 29.5 and lg["faces_per_frame"] >= 9,
            )
        rg = by.get(("gallery720", setup, "replay"))
        if rg:
            add(
                f"720p gallery replay >= 3x real time ({model})",
                f"{rg['x_realtime']:.2f}x ({rg['fps']:.0f} fps, {rg['faces_per_frame']:.1f} faces)",
                rg["x_realtime"] >= 3.0,
            )
        lm = by.get(("mosaic720", setup, "live"))
        if lm:
            add(
                f"720p classroom >= 30 faces, >= 30 fps live, DESIGN §4 ({model})",
                f"{lm['fps']:.1f} fps, {lm['faces_per_frame']:.1f} faces, {lm['dropped']} dropped",
                lm["fps"] >= 29.5 and lm["faces_per_frame"] >= 30,
            )
        lat = [r for r in stages if r["mode"] == "live" and r["setup"] == setup and r["latency_frame_ms"].get("n")]
        if lat:
            worst_row = max(r["latency_row_ms"]["max"] for r in lat if r["latency_row_ms"].get("n"))
            worst = max(lat, key=lambda r: r["latency_frame_ms"]["p95"])
            add(
                f"capture-to-row latency < 100 ms ({model}, every live input)",
                f"rows: max {worst_row:.0f} ms; frames: p95 {worst['latency_frame_ms']['p95']:.0f} ms, max "
                f"{worst['latency_frame_ms']['max']:.0f} ms ({worst['input']})",
                worst_row < 100 and worst["latency_frame_ms"]["p95"] < 100,
                "frame max includes the first frame, which is detected in line",
            )
    good = [r for r in tiling if r["frame"] == "1280x720" and r.get("recall_layouts_min", 0) >= 0.95]
    if good:
        best = max(good, key=lambda r: r["fps"])
        add(
            "43-face mosaic: >= 95 % recall at >= 15 fps (detector every frame)",
            f"{best['recall_layouts_min']:.0%} (worst of {bench_detection.LAYOUTS} layouts) at {best['fps']:.1f} "
            f"fps ({best['tiles']} = {best['grid_cxr']}, {best['workers']} workers)",
            best["fps"] >= 15,
        )
    for name in dict.fromkeys(r["model"] for r in classifier):
        b = [r for r in classifier if r["model"] == name and r["batch"] in (32, 64) and r["intra_op_threads"] == 2]
        if b:
            worst = max(r["ms_per_face"] for r in b)
            add(f"classifier <= 0.1 ms/face batched ({name}: crop + inference, batch 32/64, 2 threads)",
                f"{worst:.3f} ms/face", worst <= 0.1)
    return rows


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their per-stage ms and latency summaries as top-level columns, for printing."""
    out = []
    for r in rows:
        f = {k: v for k, v in r.items() if not isinstance(v, dict)}
        f.update({f"{k}_ms": v for k, v in r.get("ms", {}).items()})
        for name in ("latency_frame_ms", "latency_row_ms"):
            s = r.get(name) or {}
            f[f"{name[8:-3]}_p95"] = "-" if s.get("p95") is None else s["p95"]
            f[f"{name[8:-3]}_max"] = "-" if s.get("max") is None else s["max"]
        out.append(f)
    return out


def cols(names: str) -> list[str]:
    """Column names from one space-separated string."""
    return names.split()


def tables(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """(title, rows, columns) of every result table, for the terminal and for Markdown."""
    stage_cols = ["input", "mode", "setup", "K", "workers", "frames", *[f"{s}_ms" for s in STAGES]]
    stage_cols += cols(
        "ms_total cpu_ms_per_frame fps x_realtime faces_per_frame dropped frame_p95 frame_max row_max "
        "peak_rss_mb load_1m_after"
    )
    cls = [{**r, "infer_ms_per_face": r["ms_per_face"] - r["preprocess_ms_per_face"]} for r in report["classifier"]]
    out = [
        (
            "Per-stage ms/frame and end-to-end fps (replay = file at full speed; live = paced camera)",
            flat(report["stages"]),
            stage_cols,
        ),
        (
            "Ours (defaults, fast model, speed and recall modes) vs naive loop vs fer (replay, same videos)",
            report["ratios"],
            cols(
                "input setup ours_fps naive_fps fer_fps fps_vs_naive fps_vs_fer ours_faces naive_faces fer_faces "
                "faces_vs_naive faces_vs_fer face_rate_vs_naive face_rate_vs_fer"
            ),
        ),
        (
            "Detect every K (replay; the tracker carries boxes in between)",
            flat(report["detect_every"]),
            cols("input K workers console fps x_realtime faces_per_frame detect_ms classify_ms sinks_ms ms_total"),
        ),
        (
            "onnxruntime threads and spinning (speed mode, 720p gallery)",
            report["onnxruntime"],
            cols(
                "threads spinning classify_ms_per_face_b32 classify_cpu_ms_per_face_b32 gallery720_fps "
                "gallery720_detect_ms gallery720_classify_ms"
            ),
        ),
        (
            f"Classifier ms/face, crop + inference ({Path(report['settings']['model']).name})",
            cls,
            cols("model intra_op_threads batch ms_per_face preprocess_ms_per_face infer_ms_per_face mflop_per_face"),
        ),
        (
            "Detection recall (IoU >= 0.3) vs time per tiling, dlib-photo mosaic (43 faces, 20-70 px)",
            report["tiling"],
            cols(
                "frame tiles grid_cxr regions workers found faces recall recall_layouts_min recall_layouts_mean "
                "ms_per_frame fps cpu_ms_per_frame"
            ),
        ),
    ]
    peer = report.get("peer")
    if peer:
        versions = peer["versions"]
        out.append(
            (
                f"Peer: fer {versions['fer']} with its defaults (TensorFlow {versions['tensorflow']}, "
                f"OpenCV {versions['opencv']})",
                peer["videos"],
                cols(
                    "video frames decode_ms_per_frame fer_ms_per_frame fps x_realtime faces_per_frame_mean "
                    "faces_per_frame_max"
                ),
            )
        )
        out.append(
            (
                "Peer: fer's detector on the 43-face mosaic",
                peer["mosaic"],
                cols("frame found faces recall ms_per_frame"),
            )
        )
    out.append(("Memory", [report["memory"]], list(report["memory"])))
    out.append(("Targets", report["targets"], ["target", "measured", "met", "note"]))
    return out


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_report(console: Console, report: dict[str, Any]) -> None:
    for title, rows, columns in tables(report):
        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*(cell(row.get(c)) for c in columns))
        console.print(table)


def markdown(report: dict[str, Any]) -> str:
    """The result tables as Markdown (for benchmarks/README.md)."""
    parts = []
    for title, rows, columns in tables(report):
        parts.append(f"**{title}**\n")
        parts.append("| " + " | ".join(columns) + " |")
        parts.append("|" + "---:|" * len(columns))
        parts += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=classifier_path,
                        help="classifier: a shipped name (default, fast) or an ONNX file (default: default)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 %% of the frames, 3 s live runs")
    parser.add_argument("--live-seconds", type=float, default=15.0, help="wall seconds per live run (default 15)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per micro-benchmark (default 7)")
    parser.add_argument("--peer-frames", type=int, default=150, help="frames per video for fer (default 150)")
    parser.add_argument("--no-peer", action="store_true", help="skip the fer comparison")
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/pipeline_<time>.json)")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a saved result as Markdown and exit")
    args = parser.parse_args(argv)
    console = Console(width=200)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    reason = media_missing_reason()
    if reason is not None or not (FACES_DLIB_DIR / "training.xml").is_file():
        console.print(f"skipped: {reason or f'annotated photos not found at {FACES_DLIB_DIR}'}")
        return 0
    model = args.model or default_model()
    if model is None:
        console.print("no classifier model: pass --model PATH")
        return 2
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS_DIR / f"pipeline_{stamp}{'_quick' if args.quick else ''}.json"
    info = bench_detection.machine()
    info.update(machine_extra())
    info["speed_ms_at_start"] = bench_detection.machine_speed_ms()  # the VM's speed drifts: see both ends
    console.print(
        f"machine: {info['cpu']}, {info['usable_cores']} usable cores, load {info['load_avg_1_5_15']}, "
        f"other work: {info['busy_at_start'] or 'none'}; whole-frame detector pass "
        f"{info['speed_ms_at_start']:.2f} ms ({bench_detection.USUAL_SPEED_MS} at this VM's usual speed)"
    )
    reset_peak_rss()
    inputs = build_inputs(args.quick)
    live_s = 3.0 if args.quick else args.live_seconds
    repeats = 2 if args.quick else args.repeats
    t0 = time.monotonic()
    console.print("stages (naive, exact, default, fast; replay and live)")
    fast_model = None if args.model else shipped_fast_model()
    stages = section_stages(inputs, model, live_s, console, fast_model)
    console.print("detect every K")
    kstudy = section_detect_every(inputs, model, console)
    console.print("onnxruntime threads/spinning")
    ort_rows = section_onnxruntime(inputs, model, repeats, console)
    console.print("classifier batches")
    classifier = bench_detection.bench_classifier(model, load_dlib_faces(), repeats)
    mflop = conv_mflop_per_face(model)
    for row in classifier:
        row["mflop_per_face"] = mflop
    int8 = model.with_name(f"{model.stem}.int8.onnx")
    for other in (fast_model, int8 if int8.is_file() else None):  # the other shipped model; the int8 copy
        if other is not None:
            classifier += [{**row, "mflop_per_face": conv_mflop_per_face(other)}
                           for row in bench_detection.bench_classifier(other, load_dlib_faces(), repeats)]
    console.print("tiling recall")
    tiling = section_tiling(repeats, console)
    console.print("memory")
    memory = section_memory(inputs, model, console)
    peer = None
    if not args.no_peer:
        console.print("peer: fer")
        peer_out = out.with_name(out.name.replace("pipeline_", "peer_fer_", 1))
        if peer_out == out:
            peer_out = out.with_name(f"{out.stem}_peer_fer.json")
        peer = section_peer(inputs, peer_out, 20 if args.quick else args.peer_frames, console)
    info["busy_at_end"] = busy_processes()
    info["load_avg_at_end"] = list(os.getloadavg())
    info["speed_ms_at_end"] = bench_detection.machine_speed_ms()
    console.print(f"whole-frame detector pass at the end: {info['speed_ms_at_end']:.2f} ms")
    report = {
        "benchmark": "bench_pipeline",
        "started_utc": started.isoformat(timespec="seconds"),
        "duration_s": time.monotonic() - t0,
        "command": " ".join(
            ["python", "-m", "benchmarks.bench_pipeline", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "settings": {
            "model": str(model),
            "fast_model": None if fast_model is None else str(fast_model),
            "window_s": WINDOW_S,
            "live_seconds": live_s,
            "repeats": repeats,
            "quick": args.quick,
            "inputs": [
                {
                    "key": i.key,
                    "label": i.label,
                    "fps": i.fps,
                    "min_face": i.min_face,
                    "replay_frames": i.replay_frames,
                    "expected_faces": i.expected_faces,
                }
                for i in inputs
            ],
            "setups": {
                "exact": exact_setup().describe(),
                "default": "the CLI defaults: K auto, 2 detector workers, 2 ORT threads, tiles auto for the "
                "input's --min-face",
                "fast": "K=3, 2 detector workers, 1 ORT thread, tiles auto for the input's --min-face",
                "inline": "the defaults with the detector in line (RunConfig.background_detection=False), live",
                "fastmodel": "the defaults with the shipped fast model (--model fast)",
            },
            "naive": "tiles 1x1 (whole frame), one classify() call per face, no tracker/aggregator/sinks",
            "sinks": "CSV + JSONL files and the rich live view drawn to /dev/null",
            "timing": "wall clock; stage ms are per processed frame; live 'decode' is time spent "
            "waiting for the next frame (decoding happens in the grabber thread)",
        },
        "stages": stages,
        "ratios": ratios(stages, peer),
        "detect_every": kstudy,
        "onnxruntime": ort_rows,
        "classifier": classifier,
        "tiling": tiling,
        "memory": memory,
        "peer": peer,
    }
    report["targets"] = targets(stages, tiling, classifier, kstudy)
    print_report(console, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"saved {out} (peak RSS {peak_rss_mb():.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
