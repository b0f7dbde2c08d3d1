"""Anonymous face tracking: IoU association, time-based smoothing of class probabilities and of the
attention (facing) score, expiry.

The tracker turns per-frame detections into short-lived anonymous tracks so that each face's label is
smoothed over time (no flicker) and the aggregator can count distinct faces. A track is a box, a
velocity and a probability vector: no embeddings, no pixels. Ids come from a counter and are never
reused within a run; they are exposed as strings (``t17``) only at output time.

Per frame the pipeline calls either `Tracker.update` (the detector ran) or `active_boxes` +
`carry` (detect-every-K frames in between, where boxes are carried forward by a constant-velocity
prediction from the last two detections).

A track also keeps its face's six keypoints relative to its box, so carried keypoints move and scale with
the carried box, and a facing score (`edumood_live.attention`) measured at each detection and smoothed
with the same half-life as the probabilities; between detections there is no new measurement, so a
carried face keeps its track's smoothed score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edumood_live.attention import NUM_KEYPOINTS, facing
from edumood_live.config import TrackerConfig
from edumood_live.types import Detections, TrackedFaces


@dataclass
class _Track:
    """Internal per-track state (mutable; never leaves this module)."""

    box: np.ndarray  # (4,) float64, last detector box
    box_ms: float  # when `box` was detected
    probs: np.ndarray  # (K,) float64, smoothed
    probs_ms: float  # when `probs` was last updated
    keypoints: np.ndarray  # (6, 2) float64, relative to `box`: 0 = left/top edge, 1 = right/bottom edge
    facing: float  # smoothed facing score in [0, 1]; NaN until a detection had keypoints
    facing_ms: float  # when `facing` was last updated
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # px per ms, per coordinate
    hits: int = 1
    public_id: int | None = None  # assigned once the track has min_hits detector matches

    def predict(self, timestamp_ms: float, horizon_ms: float) -> np.ndarray:
        """Box extrapolated to `timestamp_ms` at constant velocity (at most `horizon_ms` ahead)."""
        dt = min(max(timestamp_ms - self.box_ms, 0.0), horizon_ms)
        box = self.box + self.velocity * dt
        # Keep a valid box even if the corners' velocities would make it collapse.
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half_w, half_h = max(box[2] - box[0], 1.0) / 2, max(box[3] - box[1], 1.0) / 2
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (M, 4) x (N, 4) -> (M, N)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken greedily by descending IoU, each row and column at most once."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


class Tracker:
    """Per-frame state machine: detections + probabilities in, tracked and smoothed faces out."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1  # public ids count up from 1 and are never reused
        self._num_classes: int | None = None
        self._active: list[_Track] = []  # confirmed tracks matched at the last detector frame

    def __len__(self) -> int:
        """Number of live tracks (confirmed or not)."""
        return len(self._tracks)

    def update(self, detections: Detections, probs: np.ndarray, timestamp_ms: float) -> TrackedFaces:
        """Associate this frame's detections with tracks and return the confirmed, matched faces.

        Output rows follow the order of `detections` (unconfirmed tracks left out); tracks that were
        not matched keep coasting until `max_age_ms` has passed since their last match.
        """
        probs = self._check_probs(probs, len(detections))
        boxes = detections.boxes.astype(np.float64)
        keypoints = relative_keypoints(detections.keypoints, boxes)
        scores = facing(detections.keypoints, detections.boxes)[2].astype(np.float64)
        cfg = self.config
        predicted = np.array([t.predict(timestamp_ms, cfg.max_age_ms) for t in self._tracks]).reshape(-1, 4)
        last = np.array([t.box for t in self._tracks]).reshape(-1, 4)
        # The better of "where it should be now" and "where it was last seen": a prediction from a
        # noisy velocity must not lose a face that simply sat still while the detector missed it.
        iou = np.maximum(iou_matrix(predicted, boxes), iou_matrix(last, boxes))
        pairs = greedy_match(iou, cfg.iou_threshold)
        track_of: dict[int, _Track] = {}
        for ti, di in pairs:
            track = self._tracks[ti]
            self._observe(track, boxes[di], probs[di], timestamp_ms)
            track.keypoints = keypoints[di]
            self._smooth_facing(track, scores[di], timestamp_ms)
            track_of[di] = track
        for di in range(len(boxes)):
            if di not in track_of:
                track = _Track(boxes[di].copy(), timestamp_ms, probs[di].copy(), timestamp_ms,
                               keypoints[di], scores[di], timestamp_ms)  # fmt: skip
                self._tracks.append(track)
                track_of[di] = track
        self._tracks = [t for t in self._tracks if timestamp_ms - t.box_ms <= cfg.max_age_ms]
        for track in track_of.values():
            if track.public_id is None and track.hits >= cfg.min_hits:
                track.public_id = self._next_id
                self._next_id += 1
        self._active = [track_of[di] for di in range(len(boxes)) if track_of[di].public_id is not None]
        return self._output(self._active, [t.box for t in self._active], detected=True)

    def active_boxes(self, timestamp_ms: float | None = None) -> np.ndarray:
        """(M, 4) float32 boxes of the faces to classify on a frame without detection.

        These are the confirmed tracks matched at the last detector frame; with `timestamp_ms` the
        boxes are predicted to that time (constant velocity), otherwise the last detected boxes.
        """
        if timestamp_ms is None:
            boxes = [t.box for t in self._active]
        else:
            boxes = [t.predict(timestamp_ms, self.config.max_age_ms) for t in self._active]
        return np.array(boxes, np.float32).reshape(-1, 4)

    def carry(self, probs: np.ndarray, timestamp_ms: float) -> TrackedFaces:
        """Carry the active tracks to a frame without detection, smoothing in the new `probs` (M, K).

        Rows of `probs` follow `active_boxes()`; the returned boxes are the predicted ones and
        ``detected`` is False. Carrying does not count as a match, so it never extends a track's life.
        """
        probs = self._check_probs(probs, len(self._active))
        for track, p in zip(self._active, probs, strict=True):
            self._smooth(track, p, timestamp_ms)
        boxes = [t.predict(timestamp_ms, self.config.max_age_ms) for t in self._active]
        return self._output(self._active, boxes, detected=False)

    # -- internals -------------------------------------------------------------------------------

    def _check_probs(self, probs: np.ndarray, n: int) -> np.ndarray:
        probs = np.asarray(probs, np.float64)
        if n == 0 and probs.size == 0:
            return np.zeros((0, self._num_classes or 0))
        if probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError(f"probs must have shape ({n}, K), got {probs.shape}")
        if n and self._num_classes is None:
            self._num_classes = probs.shape[1]
        if n and probs.shape[1] != self._num_classes:
            raise ValueError(f"probs has {probs.shape[1]} classes, earlier frames had {self._num_classes}")
        return probs

    def _observe(self, track: _Track, box: np.ndarray, probs: np.ndarray, timestamp_ms: float) -> None:
        dt = timestamp_ms - track.box_ms
        if dt > 0:
            track.velocity = (box - track.box) / dt
        track.box = box.copy()
        track.box_ms = timestamp_ms
        track.hits += 1
        self._smooth(track, probs, timestamp_ms)

    def _smooth(self, track: _Track, probs: np.ndarray, timestamp_ms: float) -> None:
        half_life = self.config.smoothing_half_life_ms
        dt = max(timestamp_ms - track.probs_ms, 0.0)
        alpha = 1.0 if half_life == 0 else 1.0 - 0.5 ** (dt / half_life)
        track.probs = track.probs + alpha * (probs - track.probs)
        track.probs_ms = max(timestamp_ms, track.probs_ms)

    def _smooth_facing(self, track: _Track, score: float, timestamp_ms: float) -> None:
        """Same exponential moving average as the probabilities; an unknown score changes nothing."""
        if np.isnan(score):
            return
        if np.isnan(track.facing):
            track.facing, track.facing_ms = score, timestamp_ms
            return
        half_life = self.config.smoothing_half_life_ms
        dt = max(timestamp_ms - track.facing_ms, 0.0)
        alpha = 1.0 if half_life == 0 else 1.0 - 0.5 ** (dt / half_life)
        track.facing += alpha * (score - track.facing)
        track.facing_ms = max(timestamp_ms, track.facing_ms)

    def _output(self, tracks: list[_Track], boxes: list[np.ndarray], detected: bool) -> TrackedFaces:
        n = len(tracks)
        k = self._num_classes or 0
        probs = np.array([t.probs for t in tracks], np.float32).reshape(n, k)
        if n:
            probs /= np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
        box_array = np.array(boxes, np.float64).reshape(n, 4)
        relative = np.array([t.keypoints for t in tracks], np.float64).reshape(n, NUM_KEYPOINTS, 2)
        size = (box_array[:, 2:] - box_array[:, :2])[:, None, :]
        return TrackedFaces(
            track_ids=np.array([t.public_id for t in tracks], np.int64),
            boxes=box_array.astype(np.float32),
            probs=probs,
            detected=np.full((n,), detected, bool),
            keypoints=(box_array[:, None, :2] + relative * size).astype(np.float32),
            facing=np.array([t.facing for t in tracks], np.float32).reshape(n),
        )


def relative_keypoints(keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 6, 2) float64 keypoints in box units (0 = the box's left/top edge, 1 = its right/bottom edge)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)[:, None, :]
    return (np.asarray(keypoints, np.float64) - boxes[:, None, :2]) / size
