"""The shared classifier of a cluster run: one onnxruntime session that batches crops across cameras.

Camera workers crop and normalise their faces themselves (`FacePreprocessor`, a few KB per face) and
send the batch here. `BatchingClassifier` is an asyncio actor: requests queue up while the model runs,
and each model call takes everything queued (up to ``max_batch_faces``), so batches grow with the
load without delaying a lone camera. When other cameras were heard from in the last second, a batch
is held open for at most ``batch_wait_ms`` for their crops to join. The model runs in one worker
thread, so the event loop keeps accepting requests meanwhile.

The class is plain Python (its batching is tested without Ray); the driver makes it a Ray actor.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import ray

from edumood_live.classifier import ClassifierConfig, FaceClassifier, ModelMetadata
from edumood_live.errors import EduMoodError

ACTIVE_CAMERA_S = 1.0  # a camera heard from this recently is expected to send again soon


@dataclass(frozen=True)
class ClassifierInfo:
    """What camera workers need to know of a classifier worker (sent to them at start)."""

    meta: ModelMetadata
    model_name: str  # file name of the model, for the run's description
    provider: str  # onnxruntime provider, e.g. CPUExecutionProvider
    node_id: str
    host: str
    pid: int
    actor_name: str  # Ray actor name: cameras look the worker up by name (no handles in their arguments)


@dataclass
class BatchStats:
    """How well the classifier batched: per model call, how many requests, cameras and faces."""

    calls: int = 0
    requests: int = 0
    faces: int = 0
    max_faces: int = 0
    max_cameras: int = 0
    model_s: float = 0.0
    cameras_per_call: Counter[int] = field(default_factory=Counter)

    def add(self, requests: int, cameras: int, faces: int, model_s: float) -> None:
        self.calls += 1
        self.requests += requests
        self.faces += faces
        self.max_faces = max(self.max_faces, faces)
        self.max_cameras = max(self.max_cameras, cameras)
        self.model_s += model_s
        self.cameras_per_call[cameras] += 1

    def merge(self, other: BatchStats) -> None:
        """Add another replica's statistics to these."""
        self.calls += other.calls
        self.requests += other.requests
        self.faces += other.faces
        self.max_faces = max(self.max_faces, other.max_faces)
        self.max_cameras = max(self.max_cameras, other.max_cameras)
        self.model_s += other.model_s
        self.cameras_per_call.update(other.cameras_per_call)

    def as_dict(self) -> dict[str, object]:
        """Totals and per-call averages (JSON-friendly)."""
        calls = max(self.calls, 1)
        multi = sum(n for cameras, n in self.cameras_per_call.items() if cameras > 1)
        return {
            "calls": self.calls,
            "requests": self.requests,
            "faces": self.faces,
            "faces_per_call": self.faces / calls,
            "requests_per_call": self.requests / calls,
            "max_faces_per_call": self.max_faces,
            "max_cameras_per_call": self.max_cameras,
            "cross_camera_call_share": multi / calls,
            "cameras_per_call": {str(k): v for k, v in sorted(self.cameras_per_call.items())},
            "model_wall_ms_per_face": 1000.0 * self.model_s / max(self.faces, 1),  # includes CPU waits
        }


@dataclass
class _Request:
    batch: np.ndarray
    camera: str
    done: asyncio.Future[np.ndarray]


class BatchingClassifier:
    """``await classify(batch, camera) -> probs``: crops from all cameras, classified in shared calls."""

    def __init__(
        self, config: ClassifierConfig, max_batch_faces: int = 256, batch_wait_ms: float = 2.0,
        name: str = "",
    ) -> None:
        self._name = name
        self._error: EduMoodError | None = None
        try:
            self._classifier: FaceClassifier | None = FaceClassifier(config)
        except EduMoodError as exc:  # handed to the driver by `info`, which raises it with its one line
            self._classifier, self._error = None, exc
        self._max_faces = max_batch_faces
        self._wait_s = batch_wait_ms / 1000.0
        self._queue: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None  # created in the actor's event loop
        self._server: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edumood-classify")
        self._heard: dict[str, float] = {}  # camera -> when it last sent crops (monotonic s)
        self._stats = BatchStats()

    async def info(self) -> ClassifierInfo | EduMoodError:
        """The model's metadata and where this worker runs, or why the model could not be loaded."""
        clf = self._classifier
        if clf is None:
            assert self._error is not None
            return self._error
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return ClassifierInfo(clf.meta, Path(clf.model_path).name, clf.provider, node_id,
                              socket.gethostname(), os.getpid(), self._name)

    async def stats(self) -> BatchStats:
        """Batching statistics since the start (a copy)."""
        return replace(self._stats, cameras_per_call=Counter(self._stats.cameras_per_call))

    async def classify(self, batch: np.ndarray, camera: str) -> np.ndarray:
        """Probabilities (N, K) for a preprocessed batch (N, C, H, W) from one camera."""
        if self._classifier is None:
            raise RuntimeError(f"the classifier could not be loaded: {self._error}")
        if len(batch) == 0:
            return np.zeros((0, len(self._classifier.labels)), np.float32)
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        request = _Request(batch, camera, loop.create_future())
        self._heard[camera] = time.monotonic()
        self._queue.append(request)
        self._arrived.set()
        if self._server is None or self._server.done():
            self._server = loop.create_task(self._serve())
        return await request.done

    async def _serve(self) -> None:
        """Run model calls while requests are queued; exits when the queue is empty."""
        while self._queue:
            await self._hold_open()
            requests = self._take()
            try:
                faces = np.concatenate([r.batch for r in requests]) if requests[1:] else requests[0].batch
                t0 = time.perf_counter()
                loop = asyncio.get_running_loop()
                assert self._classifier is not None
                probs = await loop.run_in_executor(self._pool, self._classifier.classify_batch, faces)
                model_s = time.perf_counter() - t0
            except Exception as exc:  # a bad batch fails its requests, not the worker
                for request in requests:
                    if not request.done.done():
                        request.done.set_exception(exc)
                continue
            self._stats.add(len(requests), len({r.camera for r in requests}), len(faces), model_s)
            start = 0
            for request in requests:
                n = len(request.batch)
                if not request.done.done():
                    request.done.set_result(probs[start:start + n])
                start += n

    async def _hold_open(self) -> None:
        """Wait (at most batch_wait_ms) while cameras heard from recently have not sent crops yet."""
        assert self._arrived is not None
        deadline = time.monotonic() + self._wait_s
        while self._wait_s > 0:
            now = time.monotonic()
            expected = {c for c, t in self._heard.items() if now - t <= ACTIVE_CAMERA_S}
            queued = {r.camera for r in self._queue}
            if expected <= queued or sum(len(r.batch) for r in self._queue) >= self._max_faces:
                return
            if now >= deadline:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - now)
            except TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """Queued requests up to max_batch_faces (always at least one)."""
        requests = [self._queue.popleft()]
        faces = len(requests[0].batch)
        while self._queue and faces + len(self._queue[0].batch) <= self._max_faces:
            request = self._queue.popleft()
            faces += len(request.batch)
            requests.append(request)
        return requests
