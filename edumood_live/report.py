"""A lesson report people can read at a glance: one self-contained HTML file from CSV/JSONL outputs.

Per source: a plot (class shares as a stacked area, faces in view, engagement index; gaps and withheld
windows shaded and labelled, never interpolated) and a summary table. PNGs are embedded as base64, so
the file can be mailed or archived alone. matplotlib is imported only when a report is built
(``pip install edumood-live[report]``); importing this module costs nothing but the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edumood_live.errors import ConfigError, OutputError
from edumood_live.report_plot import clock, display_labels, plot_source
from edumood_live.sinks.style import class_colour, safe_source_name

log = logging.getLogger(__name__)


REQUIRED_COLUMNS = ("window_start", "window_end", "source", "status", "frames", "faces_mean")
INPUT_SUFFIXES = (".csv", ".jsonl")
RESPONSIBLE_USE = (
    "Aggregate statistics only: this report holds no images, identities or per-person records. "
    "Inferring emotions from faces is scientifically contested; read these numbers as rough signals "
    "about a room, never as judgments about a person. Emotion recognition in education institutions "
    "is prohibited in the EU under the AI Act, Article 5(1)(f), since 2 February 2025."
)


@dataclass(frozen=True)
class Window:
    """One window row as read back from an output file."""

    source: str
    start: datetime
    end: datetime
    status: str
    frames: int
    faces_mean: float
    tracks: int | None
    shares: dict[str, float | None]  # keyed by label as written in the column (lower case)
    engagement_index: float | None
    dominant_label: str | None
    low_confidence_share: float | None
    dropped_frames: int
    attention_share: float | None = None  # absent in files written before the attention signal

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def has_shares(self) -> bool:
        """Faces were seen and the class shares were not withheld."""
        return self.observations > 0 and all(v is not None for v in self.shares.values())

    @property
    def observations(self) -> float:
        """Face observations in the window (frames x mean faces per frame)."""
        return self.frames * self.faces_mean


# -- reading ------------------------------------------------------------------------------------


def load_windows(inputs: Iterable[Path]) -> dict[str, list[Window]]:
    """Window rows of all inputs grouped by source, sorted by time, duplicates dropped. Sources come in
    the order of the first input that holds them, by name within one input (its rows interleave in
    the order windows happened to close, which is not stable from run to run).

    Raises ConfigError for a missing, empty or unrecognised input.
    """
    by_source: dict[str, dict[datetime, Window]] = {}
    first_input: dict[str, int] = {}
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("report: no input files given (pass one or more .csv or .jsonl outputs)")
    for n, path in enumerate(paths):
        for window in _read_file(path):
            by_source.setdefault(window.source, {})[window.start] = window
            first_input.setdefault(window.source, n)
    order = sorted(by_source, key=lambda src: (first_input[src], src))
    return {src: [by_source[src][k] for k in sorted(by_source[src])] for src in order}


def _read_file(path: Path) -> list[Window]:
    if not path.is_file():
        raise ConfigError(f"report input {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise ConfigError(f"report input {path}: unrecognised type {suffix or '(none)'}; use .csv or .jsonl")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM from Excel
            if suffix == ".csv":
                records = list(csv.DictReader(f))
            else:
                records = [json.loads(line) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise ConfigError(f"report input {path}: cannot be read as {suffix[1:].upper()} ({exc})") from exc
    if not records:
        raise ConfigError(f"report input {path}: is empty (no window rows)")
    if not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"report input {path}: every JSONL line must be an object")
    columns = set().union(*records)
    if "track" in columns:
        raise ConfigError(f"report input {path}: is a per-track file; pass the window file instead")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    signal = any(c.startswith("share_") for c in columns) or "attention_share" in columns  # attention alone: no shares
    if missing or not signal:
        what = ", ".join(missing) or "share_<label> or attention_share"
        raise ConfigError(f"report input {path}: not an EduMood Live output (missing columns: {what})")
    return [_parse(record, path, n) for n, record in enumerate(records, start=2 if suffix == ".csv" else 1)]


def _parse(record: dict[str, object], path: Path, line: int) -> Window:
    def num(key: str) -> float | None:
        value = record.get(key)
        if value is None or value == "":
            return None
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"report input {path}, line {line}: {key}={value!r} is not a number") from exc

    tracks = num("tracks")
    return Window(
        source=str(record.get("source") or "?"),
        start=_parse_time(record.get("window_start"), path, line),
        end=_parse_time(record.get("window_end"), path, line),
        status=str(record.get("status") or "?"),
        frames=int(num("frames") or 0),
        faces_mean=num("faces_mean") or 0.0,
        tracks=None if tracks is None else int(tracks),
        shares={k.removeprefix("share_"): num(k) for k in record if k.startswith("share_")},
        engagement_index=num("engagement_index"),
        dominant_label=str(record["dominant_label"]) if record.get("dominant_label") else None,
        low_confidence_share=num("low_confidence_share"),
        dropped_frames=int(num("dropped_frames") or 0),
        attention_share=num("attention_share"),
    )


def _parse_time(value: object, path: Path, line: int) -> datetime:
    text = str(value).strip()
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError as exc:
        raise ConfigError(f"report input {path}, line {line}: {text!r} is not an ISO-8601 time") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSummary:
    """The numbers in a source's summary table."""

    start: datetime
    end: datetime
    windows: int
    status_counts: dict[str, int]
    gap_seconds: float
    mean_engagement: float | None  # face-observation weighted
    shares: dict[str, float | None]  # face-observation weighted
    mean_faces: float | None  # frame weighted
    low_confidence_share: float | None
    dropped_frames: int
    attention_share: float | None = None  # face-observation weighted; None: no window has one (off, older file)


def _weighted_mean(pairs: Iterable[tuple[float | None, float]]) -> float | None:
    """Mean of the values that are not None, weighted; None when nothing is left."""
    kept = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in kept)
    return sum(v * w for v, w in kept) / total if total else None


def summarise(windows: Sequence[Window]) -> SourceSummary:
    """Whole-lesson numbers. Class shares, engagement, low confidence and attention are weighted by face
    observations (so they equal the numbers of the whole lesson pooled); faces by frames."""
    rated = [w for w in windows if w.has_shares]
    shares = {k: _weighted_mean((w.shares[k], w.observations) for w in rated) for k in windows[0].shares}
    engagement = _weighted_mean((w.engagement_index, w.observations) for w in rated)
    low = _weighted_mean((w.low_confidence_share, w.observations) for w in rated)
    counts: dict[str, int] = {}
    for w in windows:
        counts[w.status] = counts.get(w.status, 0) + 1
    return SourceSummary(
        start=windows[0].start,
        end=max(w.end for w in windows),
        windows=len(windows),
        status_counts=counts,
        gap_seconds=sum(w.seconds for w in windows if w.status == "gap"),
        mean_engagement=engagement,
        shares=shares,
        mean_faces=_weighted_mean((w.faces_mean, w.frames) for w in windows),
        low_confidence_share=low,
        dropped_frames=sum(w.dropped_frames for w in windows),
        attention_share=_weighted_mean((w.attention_share, w.observations) for w in windows),
    )


def short_name(source: str) -> str:
    """A source as a heading: the file name of a local path, the masked URL otherwise."""
    safe = safe_source_name(source)
    if "://" in safe or "/" not in safe.rstrip("/"):
        return safe
    return Path(safe.rstrip("/")).name


def window_length(windows: Sequence[Window]) -> float:
    """The usual window length (median) in seconds."""
    lengths = sorted(w.seconds for w in windows)
    return lengths[len(lengths) // 2]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;
color:#222;padding:0 1rem}
h1,h2{margin-bottom:.2rem}.meta{color:#666;margin-top:0}section{margin:2.5rem 0}
img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;margin:.8rem 0;font-size:.95rem}
th,td{padding:.3rem .8rem;border-bottom:1px solid #e5e5e5;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;vertical-align:baseline}
footer{margin-top:3rem;padding-top:1rem;border-top:1px solid #ddd;color:#555;font-size:.9rem}
details{margin-top:.6rem}
.caption{color:#555;font-size:.9rem;margin:.3rem 0 1rem;max-width:60rem}
"""


_CAPTION = (
    '<p class="caption">Top: how the face observations of each window split over the classes. '
    "Middle: engagement index, share Engaged − share Bored, from −1 to +1 (Angry and Neutral pull it "
    "towards 0). Bottom: faces in view. Windows without frames (gap) and windows whose shares were "
    "withheld (fewer faces than <code>--min-group</code>) are hatched and left empty, never filled in.</p>"
)


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _summary_table(summary: SourceSummary, names: dict[str, str]) -> str:
    counts = ", ".join(f"{n} {html.escape(status)}" for status, n in sorted(summary.status_counts.items()))
    rows = [
        ("Time (UTC)", f"{summary.start:%Y-%m-%d %H:%M:%S} – {summary.end:%H:%M:%S}"),
        ("Duration", _duration((summary.end - summary.start).total_seconds())),
        ("Windows", f"{summary.windows} ({counts})"),
        ("Gaps (no frames)", _duration(summary.gap_seconds)),
        ("Mean engagement index", _fmt(summary.mean_engagement, "{:+.2f}")),
        ("Mean faces in view", _fmt(summary.mean_faces, "{:.1f}")),
    ]
    if summary.attention_share is not None:  # only where the file has the signal
        rows.append(("Attention share (facing the front)", _fmt(summary.attention_share, "{:.0%}")))
    for i, (key, name) in enumerate(names.items()):
        swatch = f'<span class="swatch" style="background:{class_colour(key, i)}"></span>'
        rows.append((f"{swatch}Share {html.escape(name)}", _fmt(summary.shares.get(key), "{:.0%}")))
    rows += [
        ("Low-confidence observations", _fmt(summary.low_confidence_share, "{:.0%}")),
        ("Dropped frames", str(summary.dropped_frames)),
    ]
    body = "".join(
        f"<tr><th>{k if k.startswith('<span') else html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _window_table(windows: Sequence[Window], names: dict[str, str]) -> str:
    attention = any(w.attention_share is not None for w in windows)  # a column only where the file has it
    head = ["start", "end", "status", "frames", "faces", *names.values(), "engagement", *(["attention"] * attention)]
    lines = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for w in windows:
        cells = [
            f"{w.start:%H:%M:%S}",
            f"{w.end:%H:%M:%S}",
            html.escape(w.status),
            str(w.frames),
            f"{w.faces_mean:.1f}",
            *(_fmt(w.shares.get(k), "{:.0%}") for k in names),
            _fmt(w.engagement_index, "{:+.2f}"),
            *([_fmt(w.attention_share, "{:.0%}")] * attention),
        ]
        lines.append("<tr>" + "".join(f"<td class=num>{c}</td>" for c in cells) + "</tr>")
    return f"<details><summary>All {len(windows)} windows</summary><table>{''.join(lines)}</table></details>"


def render_html(by_source: dict[str, list[Window]], inputs: Sequence[Path]) -> str:
    """The whole report page."""
    sections = []
    for source, windows in by_source.items():
        names = display_labels(windows)
        png = base64.b64encode(plot_source(source, windows)).decode("ascii")
        title, full = html.escape(short_name(source)), html.escape(safe_source_name(source))
        length = window_length(windows)
        about = f"{len(windows)} windows of {clock(length) if length >= 60 else f'{length:g} s'}"
        where = f'<p class="meta">{full + " · " if full != title else ""}{about}</p>'
        sections.append(
            f"<section><h2>{title}</h2>{where}"
            f'<img alt="Class shares, engagement index and faces in view over time for {title}" '
            f'src="data:image/png;base64,{png}">{_CAPTION}'
            f"{_summary_table(summarise(windows), names)}{_window_table(windows, names)}</section>"
        )
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    files = ", ".join(html.escape(Path(p).name) for p in inputs)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>EduMood Live lesson report</title><style>{_CSS}</style></head><body>"
        f'<h1>Lesson report</h1><p class="meta">EduMood Live · made {made} from {files}</p>'
        f"{''.join(sections)}"
        f"<footer><strong>Responsible use.</strong> {html.escape(RESPONSIBLE_USE)} "
        "The engagement index is share Engaged − share Bored per window, from −1 to +1.</footer>"
        "</body></html>"
    )


def build_report(inputs: list[Path], out: Path) -> Path:
    """Read CSV/JSONL window outputs and write one self-contained HTML report to `out`.

    Raises ConfigError for a missing, empty or unrecognised input (or missing matplotlib) and
    OutputError when `out` cannot be written.
    """
    by_source = load_windows(inputs)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError("report needs matplotlib: pip install 'edumood-live[report]'") from exc
    page = render_html(by_source, inputs)
    out = Path(out)
    if not out.parent.is_dir():
        raise OutputError(f"cannot write report {out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write report {out}: {exc.strerror or exc}") from exc
    log.info("report written to %s (%d source(s))", out, len(by_source))
    return out
