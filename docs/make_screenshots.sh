#!/usr/bin/env bash
# Re-make the README screenshots from real runs of edumood-live; downloads nothing.
#
#   docs/img/report.png   the HTML lesson report, as Chromium draws it
#   docs/img/console.png  the live console view, captured from a tmux pane during a live run
#
# What it runs (outputs in $OUT, default /tmp/edumood-shots):
#   1. the bundled demo clip, 1 s windows;
#   2. two "cameras": tests/rtsp_server.py serves the Pexels emotions clip (one face, a wide
#      emotional range) and the Intel head-pose clip (two faces) as looped live RTSP streams; one
#      edumood-live run watches both in tmux, camera 1 is stopped for ~14 s mid-run and restarted
#      (real gap rows, a real reconnect), the pane is captured while camera 1 is down, and Ctrl-C
#      ends the run (last window: partial);
#   3. classroom.mp4 (four small faces) with --min-face 12;
#   4. `edumood-live report` over all of it; Chromium (headless) screenshots the page.
#
# Needs: the project venv (.venv, with the [report] extra), Debian's chromium and tmux
# (apt-get install chromium tmux), and for step 2 GStreamer's RTSP server
# (bash .ci/install-system-deps.sh). Chromium draws both images: the report page, and the console's
# SVG (rich's export, its web-font link removed so nothing is fetched).
# Media: the clips in ../shared/media/videos (MEDIA=... to point elsewhere; see their PROVENANCE.md).
# Live-run timings are wall-clock, so the numbers differ a little from run to run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEDIA=$(cd "${MEDIA:-$ROOT/../shared/media/videos}" && pwd)
OUT=${OUT:-/tmp/edumood-shots}
IMG=${IMG:-$ROOT/docs/img}
PY=$ROOT/.venv/bin/python
EDU=$ROOT/.venv/bin/edumood-live
NICE=(nice -n 10)
PORT1=${PORT1:-18554}
PORT2=${PORT2:-18555}
TMUX_SOCKET=edumood-shots  # a tmux server of our own: other tmux sessions are left alone
CAM1=rtsp://127.0.0.1:$PORT1/clip
CAM2=rtsp://127.0.0.1:$PORT2/clip

for tool in chromium tmux; do
  command -v "$tool" >/dev/null || { echo "make_screenshots: $tool not found (apt-get install chromium tmux)" >&2; exit 2; }
done
mkdir -p "$OUT" "$IMG"
rm -f "$OUT"/*.csv "$OUT"/*.jsonl "$OUT"/*.ans "$OUT"/*.png

SERVER_PIDS=()
cleanup() {
  tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null || true
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

start_server() {  # start_server PORT CLIP FPS KBPS: sets SERVER_PID once the server prints READY
  local log=$OUT/rtsp-$1.log
  for _ in $(seq 20); do  # a port just freed can linger briefly: retry
    "${NICE[@]}" /usr/bin/python3 "$ROOT/tests/rtsp_server.py" "$1" --clip "$2" --fps "$3" --bitrate "$4" >"$log" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    for _ in $(seq 150); do  # decoding the clip takes a few seconds
      grep -qs READY "$log" && return 0
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill "$SERVER_PID" 2>/dev/null || true
    sleep 1
  done
  echo "make_screenshots: the RTSP server on port $1 did not start (see $log)" >&2
  return 1
}

capture() {  # capture NAME: the pane as the user sees it, colours included (ANSI)
  tmux -L "$TMUX_SOCKET" capture-pane -p -e -t shots >"$OUT/$1.ans"
}

echo "1/4 demo clip"
"${NICE[@]}" "$EDU" --source demo --window 1 --csv "$OUT/demo.csv" --jsonl "$OUT/demo.jsonl" --no-console

echo "2/4 two live RTSP cameras in tmux (about 70 s)"
start_server "$PORT1" "$MEDIA/pexels-wolfgang-langer-woman-emotions-3063838.mp4" 24 1500
CAM1_PID=$SERVER_PID
start_server "$PORT2" "$MEDIA/head-pose-face-detection-female-and-male.mp4" 12 800
tmux -L "$TMUX_SOCKET" new-session -d -s shots -x 120 -y 36 \
  "COLORTERM=truecolor ${NICE[*]} $EDU --source $CAM1 --source $CAM2 --window 2 --min-group 1 \
   --csv $OUT/live.csv --jsonl $OUT/live.jsonl; echo EXITED \$?; sleep 600"
sleep 22
capture live-connected
kill "$CAM1_PID" 2>/dev/null || true  # camera 1 goes down...
sleep 6
for i in 1 2 3 4 5 6; do capture "live-down-$i"; sleep 1; done  # the view is per frame: take a few
start_server "$PORT1" "$MEDIA/pexels-wolfgang-langer-woman-emotions-3063838.mp4" 24 1500  # ...and back
sleep 30
capture live-back
tmux -L "$TMUX_SOCKET" send-keys -t shots C-c
for _ in $(seq 30); do
  sleep 1
  tmux -L "$TMUX_SOCKET" capture-pane -p -t shots | grep -q "^EXITED" && break
done
capture live-end

echo "3/4 classroom clip"
"${NICE[@]}" "$EDU" --source "$MEDIA/classroom.mp4" --window 1 --min-face 12 --csv "$OUT/classroom.csv" --no-console

echo "4/4 report and screenshots"
"${NICE[@]}" "$EDU" report "$OUT/report.html" "$OUT/live.csv" "$OUT/classroom.csv" "$OUT/demo.csv"
"${NICE[@]}" "$PY" - "$OUT" "$IMG" "$CAM1" "$CAM2" <<'PY'
"""Chromium screenshots -> docs/img/report.png (the top of the page: title, the first camera's plot
and summary) and docs/img/console.png (a tmux capture taken while camera 1 was down)."""
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.text import Text

out, img, cam1, cam2 = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
WIDTH = 120  # the tmux pane's columns
TITLE = f"edumood-live --source {cam1} --source {cam2} --window 2 --min-group 1 --csv live.csv --jsonl live.jsonl"


def chromium(url: str, png: Path, width: int, height: int) -> Image.Image:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            ["nice", "-n", "10", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={width},{height}", url],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    return Image.open(png).convert("RGB")


def white_rows(image: Image.Image) -> list[bool]:
    grey = image.convert("L")
    return [grey.crop((0, y, image.width, y + 1)).getextrema()[0] >= 250 for y in range(image.height)]


def save(image: Image.Image, name: str) -> None:
    path = img / name
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size // 1024} KB")


# -- the report: from the top down to the first summary table ------------------------------------
page = chromium((out / "report.html").as_uri(), out / "report-page.png", 1280, 2400)
white = white_rows(page)
y, run = 0, 0
while y < len(white) and run < 300:  # the first plot: the first tall block without a white row
    run = 0 if white[y] else run + 1
    y += 1
gap = 0
while y < len(white) and gap < 30:  # below it: caption, table, "All N windows", then the section gap
    gap = gap + 1 if white[y] else 0
    y += 1
save(page.crop((24, 0, page.width - 24, y - gap + 24)), "report.png")

# -- the console: the captured pane as an SVG terminal window, drawn by Chromium ----------------
def pick() -> Path:
    """The first capture taken while camera 1 was down in which camera 2 shows its class bars."""
    downs = sorted(out.glob("live-down-*.ans"))
    for path in downs:
        plain = Text.from_ansi(path.read_text(encoding="utf-8")).plain
        if "reconnecting" in plain and re.search(r"\d%", plain.split(f"{cam2} ─")[-1]):
            return path
    return downs[-1]


capture = pick()
print(f"console: {capture.name}")
# parsed whole: tmux carries attributes over line ends without repeating them
lines = list(Text.from_ansi(capture.read_text(encoding="utf-8")).split("\n"))
while lines and not lines[-1].plain.strip():
    lines.pop()
console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor")
for line in lines:
    console.print(line, no_wrap=True, crop=True)
svg = console.export_svg(title=TITLE)
svg = re.sub(r"@font-face\s*\{[^}]*\}", "", svg)  # no web fonts: the local monospace font is used
(out / "console.svg").write_text(svg, encoding="utf-8")
w, h = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
page_html = out / "console.html"
page_html.write_text(
    f'<html><body style="margin:0;background:#fff"><img src="console.svg" '
    f'style="display:block;width:{w:.0f}px;height:{h:.0f}px"></body></html>',
    encoding="utf-8",
)
shot = chromium(page_html.as_uri(), out / "console-page.png", round(w), round(h))
save(shot, "console.png")
PY
