#!/usr/bin/python3
"""A real RTSP server for the source tests: serves a video clip, looped, at rtsp://127.0.0.1:PORT/clip.

Run it with the system Python (it needs GStreamer's introspection bindings, not the project venv):

    /usr/bin/python3 tests/rtsp_server.py PORT [--clip PATH] [--fps N] [--gop N] [--bitrate KBPS]

The clip is decoded once into raw frames; every client session gets its own pipeline that feeds those
frames, looped, through an H.264 encoder (openh264enc, from gstreamer1.0-plugins-bad; x264enc when
installed) into the RTP payloader. Buffers carry their presentation times and the server's sinks pace
them to the clock, so the stream runs in real time like a camera. A keyframe every `--gop` frames lets
a reconnecting client show a picture quickly. Prints ``READY`` on stdout once the port is listening.
Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}
gstreamer1.0-libav (see .ci/install-system-deps.sh).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

DEFAULT_CLIP = Path(__file__).resolve().parents[1] / "edumood_live" / "assets" / "sample_clip.mp4"


def decode_clip(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode every frame of `path` to raw I420; returns (width, height, frames)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=I420 '
        "! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    width = height = 0
    while True:
        sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
        if sample is None:
            break
        structure = sample.get_caps().get_structure(0)
        width, height = structure.get_value("width"), structure.get_value("height")
        buffer = sample.get_buffer()
        frames.append(buffer.extract_dup(0, buffer.get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not frames:
        raise SystemExit(f"rtsp_server: could not decode any frame from {path}")
    return width, height, frames


def encoder_description(gop: int, bitrate_kbps: int | None = None) -> str:
    """The lowest-latency H.264 encoder available, configured for an IDR frame every `gop` frames and,
    when given, a target bitrate (else the encoder's default: 2048 kbit/s x264enc, 128 openh264enc)."""
    if Gst.ElementFactory.find("x264enc") is not None:
        rate = f" bitrate={bitrate_kbps}" if bitrate_kbps else ""
        return f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop}{rate}"
    if Gst.ElementFactory.find("openh264enc") is not None:
        rate = f" bitrate={bitrate_kbps * 1000}" if bitrate_kbps else ""
        return f"openh264enc gop-size={gop} complexity=low{rate}"
    raise SystemExit("rtsp_server: no H.264 encoder (install gstreamer1.0-plugins-bad or -ugly)")


class ClipFeeder:
    """Feeds the decoded frames, looped and time-stamped, into one session's appsrc."""

    def __init__(self, frames: list[bytes], fps: int) -> None:
        self.frames = frames
        self.duration_ns = Gst.SECOND // fps
        self.count = 0

    def need_data(self, appsrc: Gst.Element, _length: int) -> None:
        data = self.frames[self.count % len(self.frames)]
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.pts = self.count * self.duration_ns
        buffer.duration = self.duration_ns
        self.count += 1
        appsrc.emit("push-buffer", buffer)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Serve a looped clip at rtsp://127.0.0.1:PORT/clip")
    parser.add_argument("port", type=int)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--fps", type=int, default=12, help="frame rate of the served stream")
    parser.add_argument("--gop", type=int, default=6, help="frames between keyframes")
    parser.add_argument("--bitrate", type=int, metavar="KBPS", help="H.264 bitrate (default: the encoder's)")
    args = parser.parse_args(argv)

    Gst.init(None)
    width, height, frames = decode_clip(args.clip)
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1"
    launch = (
        f"( appsrc name=src format=time caps={caps} ! queue max-size-buffers=2 "
        f"! {encoder_description(args.gop, args.bitrate)} ! h264parse "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )

    def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.connect("need-data", ClipFeeder(frames, args.fps).need_data)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    factory.connect("media-configure", configure)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory("/clip", factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
