#!/usr/bin/env bash
# Build the separate virtual environment for the peer benchmark (benchmarks/bench_peer_fer.py):
# `fer` (https://github.com/justinshenk/fer, MIT) with TensorFlow (CPU) from PyPI, kept apart from
# the project's venv so its OpenCV and TensorFlow wheels cannot overwrite ours (DESIGN §3).
#
#   bash benchmarks/setup_peer.sh            # creates benchmarks/work/fer-venv (~1.5 GB)
#
# fer is installed without its dependency list on purpose: that list includes facenet-pytorch (and
# with it PyTorch, several GB), which fer imports only for its optional MTCNN detector. The peer runs
# with fer's defaults (Haar cascade + the bundled quantised TFLite model), which need none of it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${FER_VENV:-$here/work/fer-venv}"
python="${PYTHON:-python3}"
fer_version="${FER_VERSION:-25.10.3}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q --no-deps "fer==$fer_version"
# fer's own requirements minus facenet-pytorch; tensorflow-cpu satisfies fer's `tensorflow` import.
# opencv-contrib-python < 5: OpenCV 5 wheels no longer ship the Haar cascades that fer's default
# detector loads from cv2.data (it would fail with "!empty() in function 'detectMultiScale'").
# setuptools < 81: fer imports pkg_resources. pip then warns that fer "requires tensorflow" and
# "facenet-pytorch": expected (the module `tensorflow` comes from tensorflow-cpu).
"$venv/bin/pip" install -q tensorflow-cpu "opencv-contrib-python<5" matplotlib pandas requests "tqdm>=4.62.1" \
  "moviepy>=1.0.3,<2.0" "ffmpeg-python>=0.2.0" Pillow "setuptools<81"
"$venv/bin/python" - <<'PY'
import cv2, tensorflow as tf
import fer
try:
    from fer import FER  # fer <= 22.x
except ImportError:
    from fer.fer import FER  # fer 25.x no longer re-exports it
import numpy as np
FER().detect_emotions(np.zeros((120, 160, 3), np.uint8))  # cascade + model load: fail here, not later
print(f"fer {fer.__version__}, tensorflow {tf.__version__}, opencv {cv2.__version__}: ready")
PY
