"""Typed containers passed between pipeline stages.

Arrays carry the face on their first axis; boxes are ``xyxy`` float32 pixels in frame coordinates.
Time is the source's monotonic timestamp in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edumood_live.attention import NUM_KEYPOINTS
from edumood_live.states import WindowStatus

_NO_KEYPOINTS = np.zeros((0, NUM_KEYPOINTS, 2), np.float32)  # sentinel: built without keypoints
_NO_FACING = np.zeros((0,), np.float32)  # sentinel: TrackedFaces built without facing scores


@dataclass(frozen=True)
class Frame:
    """One decoded frame: BGR ``uint8`` image of shape (H, W, 3)."""

    image: np.ndarray
    timestamp_ms: float
    index: int
    source: str


@dataclass(frozen=True)
class Detections:
    """Face boxes found in one frame, with BlazeFace's six keypoints per face.

    ``keypoints`` (N, 6, 2) float32 frame pixels in `edumood_live.attention.KEYPOINTS` order (right eye,
    left eye, nose tip, mouth centre, right ear tragion, left ear tragion; the subject's right and left);
    NaN where the detector gave none; left out when constructing: NaN for every face.
    """

    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    scores: np.ndarray  # (N,) float32 in [0, 1]
    keypoints: np.ndarray = field(default_factory=lambda: _NO_KEYPOINTS)  # (N, 6, 2) float32 pixels

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"boxes has {len(boxes)} rows but scores has {len(scores)}")
        if self.keypoints is _NO_KEYPOINTS:
            keypoints = np.full((len(boxes), NUM_KEYPOINTS, 2), np.nan, np.float32)
        else:
            keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if keypoints.shape != (len(boxes), NUM_KEYPOINTS, 2):
                raise ValueError(
                    f"keypoints must have shape ({len(boxes)}, {NUM_KEYPOINTS}, 2), got {keypoints.shape}"
                )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "keypoints", keypoints)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.keypoints[index])


@dataclass(frozen=True)
class TrackedFaces:
    """Faces of one frame after tracking: anonymous ids, temporally smoothed class probabilities and
    facing score (`edumood_live.attention`), and keypoints that move with the (possibly carried) box.

    ``probs`` has K = 0 columns when no expression classifier runs (``--signals attention``).
    ``keypoints`` and ``facing`` left out when constructing: NaN (unknown) for every face.
    """

    track_ids: np.ndarray  # (N,) int64, anonymous, never reused within a run
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    probs: np.ndarray  # (N, K) float32, smoothed over the track's recent frames, rows sum to 1
    detected: np.ndarray | None = None  # (N,) bool: box from the detector on this frame; None = all of them
    keypoints: np.ndarray = field(default_factory=lambda: _NO_KEYPOINTS)  # (N, 6, 2) float32 pixels
    facing: np.ndarray = field(default_factory=lambda: _NO_FACING)  # (N,) float32 smoothed score, NaN = unknown

    def __post_init__(self) -> None:
        n = len(self.track_ids)
        if len(self.boxes) != n or len(self.probs) != n:
            raise ValueError(
                "track_ids, boxes and probs need the same length, got "
                f"{n}, {len(self.boxes)}, {len(self.probs)}"
            )
        if self.detected is None:
            object.__setattr__(self, "detected", np.ones((n,), bool))
        elif len(self.detected) != n:
            raise ValueError(f"detected has {len(self.detected)} entries for {n} faces; give one per face or None")
        if self.keypoints is _NO_KEYPOINTS:
            object.__setattr__(self, "keypoints", np.full((n, NUM_KEYPOINTS, 2), np.nan, np.float32))
        elif self.keypoints.shape != (n, NUM_KEYPOINTS, 2):
            raise ValueError(f"keypoints must have shape ({n}, {NUM_KEYPOINTS}, 2), got {self.keypoints.shape}")
        if self.facing is _NO_FACING:
            object.__setattr__(self, "facing", np.full((n,), np.nan, np.float32))
        elif self.facing.shape != (n,):
            raise ValueError(f"facing must have shape ({n},), got {self.facing.shape}")

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass(frozen=True)
class WindowSummary:
    """Aggregate statistics of one source over one time window (one CSV/JSONL row).

    ``shares`` maps each model label to the fraction of face observations with that label (after
    per-track smoothing); values sum to 1 when there were faces; all None when withheld or when there were none;
    empty when no expression classifier ran. ``attention_share`` is the fraction of face observations with a
    known facing score whose track-smoothed score is >= 0.5 (`edumood_live.attention`).
    """

    source: str
    window_start_utc: str  # ISO-8601, UTC
    window_end_utc: str
    status: WindowStatus
    frames: int
    fps: float
    faces_mean: float
    tracks: int
    shares: dict[str, float | None]  # None: withheld (below min_group)
    engagement_index: float | None
    dominant_label: str | None
    low_confidence_share: float | None
    dropped_frames: int
    attention_share: float | None = None  # facing-front fraction of face observations; None: off/withheld/none

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", WindowStatus(self.status))

    def to_row(self) -> dict[str, object]:
        """Flat dict in the documented column order; absent values are ``None``."""
        row: dict[str, object] = {
            "window_start": self.window_start_utc,
            "window_end": self.window_end_utc,
            "source": self.source,
            "status": self.status.value,
            "frames": self.frames,
            "fps": round(self.fps, 3),
            "faces_mean": round(self.faces_mean, 3),
            "tracks": self.tracks,
        }
        for label, share in self.shares.items():
            row[f"share_{label.lower()}"] = None if share is None else round(share, 4)
        row["engagement_index"] = None if self.engagement_index is None else round(self.engagement_index, 4)
        row["dominant_label"] = self.dominant_label
        row["low_confidence_share"] = (
            None if self.low_confidence_share is None else round(self.low_confidence_share, 4)
        )
        row["dropped_frames"] = self.dropped_frames
        row["attention_share"] = None if self.attention_share is None else round(self.attention_share, 4)
        return row
