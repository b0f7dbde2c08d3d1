"""Head orientation from BlazeFace's six keypoints: yaw, pitch and whether a face looks to the front.

Full-range BlazeFace returns six keypoints per face at no extra cost, in this order (`KEYPOINTS`):
the subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (for a
face looking at the camera the subject's right eye is on the image's left). `facing` fits a generic
3-D head (`HEAD_MODEL`, millimetres, an average adult) to them with a scaled-orthographic camera:

1. centre the 2-D points and the model; the least-squares affine map ``M`` (2x3) from model to image is
   ``points.T @ pinv(model.T)`` (one matrix product for all faces: the model, hence its pseudo-inverse,
   is fixed);
2. the rows of ``M`` are the image x and y axes seen in head coordinates, scaled; normalised and made
   orthogonal they give the rotation's first two rows, and their cross product the third;
3. the face's forward direction (the head's -z axis, out of the face) in camera coordinates gives
   ``yaw = atan2(f_x, -f_z)`` and ``pitch = atan2(-f_y, hypot(f_x, f_z))``.

Conventions: degrees; yaw 0 = the face points at the camera, **positive yaw = turned towards the
image's right** (the subject's left), so a horizontally flipped image negates yaw; positive pitch =
looking up. Orthographic projection means the camera's field of view is ignored (a face at the frame's
edge seen frontally reads a few degrees off), and the translation and scale of the box drop out: a face
carried with its box keeps its angles.

`facing_score` turns the angles into a soft "looks towards the camera" score in [0, 1]: the product of
two logistic steps at ``|yaw| = YAW_LIMIT_DEG`` and ``|pitch| = PITCH_LIMIT_DEG`` of width
`SOFTNESS_DEG`. A face counts as facing the front when its (track-smoothed) score is >= 0.5, i.e. while
both angles are within their limits. "The front" is the camera: these figures assume it sits at the
front of the room, near what the class should look at.

Limits: yaw is the robust angle (eyes, nose and ears spread along x). Pitch from six points is weak:
the eyes, nose, mouth and ears lie almost in one horizontal band, a face's own proportions (and the
detector's idea of the "ear tragion") shift it by 10-15 degrees between people, and beyond ~45 degrees
of yaw the far ear is hidden and its keypoint is guessed. Keypoints that are not finite (a detection
without keypoints) give NaN angles and a NaN score: unknown, never "not facing".
"""

from __future__ import annotations

import numpy as np

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
NUM_KEYPOINTS = len(KEYPOINTS)

# Generic head in millimetres: x towards the image's right (for a frontal face), y down, z away from
# the camera (into the head); origin at the nose tip. Average adult proportions: pupils 63 mm apart,
# ~33 mm above the nose tip and ~25 mm behind it; mouth centre 28 mm below and 12 mm behind; ear
# tragions 145 mm apart and ~95 mm behind the nose tip, 20 mm above it: on the Frankfurt plane, level
# with the lower rim of the eye sockets. (With that height the dlib portrait photos, people facing the
# camera, read a median pitch of +2 degrees; 15 mm lower reads -8.)
HEAD_MODEL = np.array(
    [
        [-31.5, -33.0, 25.0],  # right eye (subject's right = image left)
        [31.5, -33.0, 25.0],  # left eye
        [0.0, 0.0, 0.0],  # nose tip
        [0.0, 28.0, 12.0],  # mouth centre
        [-72.5, -20.0, 95.0],  # right ear tragion
        [72.5, -20.0, 95.0],  # left ear tragion
    ],
    np.float64,
)
_MODEL_CENTRED = HEAD_MODEL - HEAD_MODEL.mean(axis=0)
_MODEL_PINV = np.linalg.pinv(_MODEL_CENTRED.T)  # (6, 3): M = points_centred.T @ _MODEL_PINV

YAW_LIMIT_DEG = 30.0  # |yaw| beyond this: turned away from the front (a neighbour, a window, the wall)
PITCH_LIMIT_DEG = 25.0  # |pitch| beyond this: looking down at the desk/phone or up at the ceiling
FACING_THRESHOLD = 0.5  # a (smoothed) score at or above this counts as facing the front
SOFTNESS_DEG = 5.0  # width of the logistic steps: 5 degrees past a limit the score factor is ~0.27


def head_angles(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw_deg, pitch_deg), each (N,) float32, from (N, 6, 2) pixel keypoints in `KEYPOINTS` order."""
    points = np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 2)
    centred = points - points.mean(axis=1, keepdims=True)
    m = np.einsum("nkc,kd->ncd", centred, _MODEL_PINV)  # (N, 2, 3): rows = image x, y axes in the head
    r1 = m[:, 0]
    r2 = m[:, 1]
    r1 = r1 / np.maximum(np.linalg.norm(r1, axis=1, keepdims=True), 1e-12)
    r2 = r2 - np.sum(r1 * r2, axis=1, keepdims=True) * r1  # Gram-Schmidt: the affine fit is not rigid
    r2 = r2 / np.maximum(np.linalg.norm(r2, axis=1, keepdims=True), 1e-12)
    r3 = np.cross(r1, r2)
    # forward = R @ (0, 0, -1) = -(r1_z, r2_z, r3_z)
    fx, fy, fz = -r1[:, 2], -r2[:, 2], -r3[:, 2]
    yaw = np.degrees(np.arctan2(fx, -fz))
    pitch = np.degrees(np.arctan2(-fy, np.hypot(fx, fz)))
    return yaw.astype(np.float32), pitch.astype(np.float32)


def facing_score(yaw_deg: np.ndarray, pitch_deg: np.ndarray) -> np.ndarray:
    """(N,) float32 in [0, 1]: ~1 well inside both limits, 0.5 on a limit, ~0 well beyond; NaN stays NaN."""
    yaw = np.abs(np.asarray(yaw_deg, np.float64))
    pitch = np.abs(np.asarray(pitch_deg, np.float64))
    with np.errstate(over="ignore"):
        inside_yaw = 1.0 / (1.0 + np.exp((yaw - YAW_LIMIT_DEG) / SOFTNESS_DEG))
        inside_pitch = 1.0 / (1.0 + np.exp((pitch - PITCH_LIMIT_DEG) / SOFTNESS_DEG))
    return (inside_yaw * inside_pitch).astype(np.float32)


def facing(keypoints: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: (yaw_deg, pitch_deg, facing_score), each (N,) float32.

    `keypoints` (N, 6, 2) pixel coordinates in `KEYPOINTS` order, `boxes` (N, 4) xyxy pixels. The box
    only checks that both describe the same faces: the orthographic fit needs no scale or position.
    """
    points = np.asarray(keypoints, np.float32)
    n = len(np.asarray(boxes).reshape(-1, 4))
    if points.shape != (n, NUM_KEYPOINTS, 2):
        raise ValueError(f"keypoints must have shape ({n}, {NUM_KEYPOINTS}, 2) for {n} boxes, got {points.shape}")
    if n == 0:
        empty = np.zeros((0,), np.float32)
        return empty, empty.copy(), empty.copy()
    yaw, pitch = head_angles(points)
    return yaw, pitch, facing_score(yaw, pitch)
