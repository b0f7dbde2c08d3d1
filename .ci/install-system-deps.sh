#!/usr/bin/env bash
# System packages the RTSP source tests need: GStreamer's RTSP server with Python bindings, run by
# tests/rtsp_server.py under /usr/bin/python3. Idempotent: installs only what is missing.
#   python3-gi, gir1.2-gst-rtsp-server-1.0  bindings + gst-rtsp-server (pulls GStreamer core)
#   gstreamer1.0-plugins-base               appsrc, decodebin, videoconvert
#   gstreamer1.0-plugins-good               qtdemux, rtph264pay
#   gstreamer1.0-plugins-bad                h264parse, openh264enc (the encoder; x264enc from -ugly
#                                           is used instead when present, but is not required)
#   gstreamer1.0-libav                      avdec_h264, to decode the bundled clip
# Without these packages the tests marked `rtsp` skip with the reason; nothing else depends on them.
set -euo pipefail

PACKAGES=(
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-libav
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: apt-get not found; install these by hand: ${missing[*]}" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root or sudo for: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
  && echo "install-system-deps: gst-rtsp-server importable from /usr/bin/python3"
