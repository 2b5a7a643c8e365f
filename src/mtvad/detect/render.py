"""What `vad detect` shows: anomaly maps over frames, thumbnails, score timelines, the annotated MP4, the page.

    RUN/index.html              the page: the settings, then per video its timeline, warnings, events, thumbnails
    RUN/timelines/<video>.png   the fused calibrated score over time (each branch lighter), threshold, events
    RUN/thumbnails/*.png        an event's peak frame and its anomaly map side by side, with a caption
    RUN/videos/<video>.mp4      every frame of the source with its map, a score bar, the time, events framed red

Heat maps are in [0, 1] (NaN: no map), coloured with matplotlib's inferno and blended over the frame with a
weight that grows with the heat from 0 at `HEAT_FLOOR`; a frame is left as it is where the heat is below it.
The MP4 is MPEG-4 Part 2 ('mp4v', what OpenCV's own FFmpeg can write): it needs even sizes, so a frame of odd
height or width is padded by one replicated row or column.
"""

from __future__ import annotations

import html
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

import numpy as np

from mtvad.detect.events import Event, clock
from mtvad.errors import VadError
from mtvad.written import atomic_write_text, temp_path

HEAT_FLOOR = 0.1  # heat at or below this leaves the frame as it is
HEAT_ALPHA = 0.7  # the blend weight of the colour at heat 1
BRANCH_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")
RED = (220, 30, 30)  # RGB
GREEN = (40, 190, 60)
FOURCC = "mp4v"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@lru_cache(maxsize=1)
def _inferno() -> np.ndarray:
    """(256, 1, 3) uint8 RGB: matplotlib's inferno as a cv2.LUT table, indexed by heat x 255."""
    import matplotlib

    rgb = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]
    return np.rint(rgb * 255).astype(np.uint8).reshape(256, 1, 3)


def _rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must be RGB (H, W, 3); got shape {frame.shape}")
    return frame.astype(np.uint8, copy=False)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The frame (uint8 RGB, H x W x 3) with the heat map (h x w in [0, 1], NaN: none) resized to it (bilinear),
    coloured with inferno and blended where the heat is above HEAT_FLOOR; uint8 RGB, a new array."""
    import cv2

    frame = _rgb(frame)
    if heat is None:
        return frame.copy()
    h, w = frame.shape[:2]
    heat = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat, 0, 1)
    weight = HEAT_ALPHA * np.clip((heat - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)
    if not weight.any():
        return frame.copy()
    index = cv2.convertScaleAbs(heat, alpha=255)  # rounded, uint8
    colour = cv2.LUT(cv2.merge([index, index, index]), _inferno())
    weight = weight.astype(np.float32)
    return cv2.blendLinear(colour, np.ascontiguousarray(frame), weight, 1 - weight)


def _scaled(image: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)


def _caption_font(text: str, width: int):
    """The largest default PIL font (14 px down to 8) the caption fits in `width` with, and the text (cut short
    with an ellipsis if it does not fit even at 8 px)."""
    from PIL import ImageFont

    for size in range(14, 7, -1):
        font = ImageFont.load_default(size)
        if font.getlength(text) <= width:
            return font, text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return font, text + "…"


def write_thumbnail(path: Path, frame: np.ndarray, heat: np.ndarray, caption: str, width: int = 320) -> None:
    """PNG: the frame and its overlay side by side (each `width` px wide, aspect kept), the caption above."""
    from PIL import Image, ImageDraw

    frame = _rgb(frame)
    left = _scaled(frame, width)
    right = _scaled(overlay(frame, heat), width)
    pad = 4
    font, text = _caption_font(caption, 2 * width - 2 * pad)
    bottom = font.getbbox("Ag" + text)[3]
    strip = bottom + 2 * pad
    canvas = Image.new("RGB", (2 * width, strip + left.shape[0]), (0, 0, 0))
    canvas.paste(Image.fromarray(left), (0, strip))
    canvas.paste(Image.fromarray(right), (width, strip))
    ImageDraw.Draw(canvas).text((pad, pad), text, fill=(255, 255, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")


def _plain(text: str) -> str:
    """Text matplotlib prints as it is (a '$' would start mathtext)."""
    return str(text).replace("$", r"\$")


def timeline_figure(path: Path, video: str, fps: float, fused: np.ndarray, threshold: float,
                    events: Sequence[Event], branches: Mapping[str, np.ndarray] | None = None) -> None:
    """PNG (~1000 x 300 px): the fused calibrated score over time in seconds (NaN: a gap), each branch thinner and
    lighter, the threshold dashed, each event shaded over [start_s, end_s) with its number and its peak marked."""
    plt = _plt()
    fused = np.asarray(fused, np.float64)
    seconds = np.arange(len(fused)) / fps
    fig, ax = plt.subplots(figsize=(10, 3))
    for i, (name, scores) in enumerate((branches or {}).items()):
        ax.plot(seconds, np.asarray(scores, np.float64), lw=0.9, alpha=0.6,
                color=BRANCH_COLOURS[i % len(BRANCH_COLOURS)], label=_plain(name))
    ax.plot(seconds, fused, lw=1.6, color="black", label="fused")
    ax.axhline(threshold, color="crimson", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    for e in events:
        ax.axvspan(e.start_s, e.end_s, color="red", alpha=0.15, lw=0)
        ax.text((e.start_s + e.end_s) / 2, 1.01, str(e.index), transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8, color="darkred", fontweight="bold", clip_on=False)
        ax.plot([e.peak_s], [e.peak_score], "v", ms=6, color="crimson", mec="black", mew=0.5)
    n = len(events)
    ax.set(xlim=(0, max(len(fused) / fps, 1 / fps)), xlabel="time (s)", ylabel="calibrated score")
    ax.set_title(_plain(f"{video}: {n} event{'' if n == 1 else 's'}"), pad=14)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1), borderaxespad=0, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


class _Annotator:
    """Draws one output frame: overlay, score bar, time and frame number, the event border and label."""

    def __init__(self, height: int, width: int, fps: float, threshold: float, events: Sequence[Event]):
        self.fps = fps
        self.border = max(3, round(min(height, width) / 80))
        self.bar = max(4, round(height / 30))
        self.font_scale = max(0.3, height / 720)
        self.thickness = max(1, round(height / 540))
        # the bar spans [lo, hi] with the threshold in the middle: [0, 2 x threshold] when it is > 0
        self.lo, self.hi = (0.0, 2 * threshold) if threshold > 0 else (threshold - 1, threshold + 1)
        self.threshold = threshold
        self.event_of = {}
        for e in events:
            for t in range(e.start_frame, e.end_frame + 1):
                self.event_of.setdefault(t, e.index)

    def _text(self, image: np.ndarray, text: str, org: tuple[int, int], colour) -> None:
        import cv2

        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(image, text, org, font, self.font_scale, (0, 0, 0), self.thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, org, font, self.font_scale, colour, self.thickness, cv2.LINE_AA)

    def draw(self, image: np.ndarray, t: int, score: float) -> np.ndarray:
        """`image` (RGB, drawn on in place) of frame t with its score; returns it."""
        import cv2

        h, w = image.shape[:2]
        b = self.border
        y0, y1, x0, x1 = h - b - self.bar, h - b, b, w - b
        image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * 0.4).astype(np.uint8)  # the bar's dark track
        if np.isfinite(score):
            fraction = float(np.clip((score - self.lo) / (self.hi - self.lo), 0, 1))
            image[y0:y1, x0 : x0 + round(fraction * (x1 - x0))] = RED if score > self.threshold else GREEN
        tick = x0 + (x1 - x0) // 2
        image[y0 - 2 : y1, max(x0, tick - 1) : tick + 1] = 255
        (_, text_h), _ = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, self.thickness)
        self._text(image, f"{clock(t / self.fps)}  #{t}", (b + 2, b + 2 + text_h), (255, 255, 255))
        k = self.event_of.get(t)
        if k is not None:
            image[:b], image[-b:], image[:, :b], image[:, -b:] = RED, RED, RED, RED
            label = f"EVENT {k}"
            (label_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, self.thickness)
            self._text(image, label, (max(b + 2, w - b - 2 - label_w), b + 2 + text_h), RED)
        return image


def write_annotated_video(path: Path, frames: Iterable[np.ndarray], fps: float, heat: np.ndarray,
                          fused: np.ndarray, threshold: float, events: Sequence[Event],
                          progress: Callable[[int], None] | None = None) -> int:
    """An MP4 ('mp4v') at `fps` with one output frame per input frame: the frame's heat map over it, its score as
    a bar along the bottom (threshold tick in the middle, green below, red above), the time and frame number,
    a red border and "EVENT k" during an event. `heat` (T, h, w) in [0, 1] (NaN: no map) or None, `fused` (T,).
    Written beside `path` and renamed at the end; returns T. A frame count other than T: ValueError."""
    import cv2

    fused = np.asarray(fused, np.float64)
    n = len(fused)
    if heat is not None and len(heat) != n:
        raise ValueError(f"heat has {len(heat)} frames, the scores {n}")
    if n == 0:
        raise ValueError("no frames to write")
    if not fps > 0:
        raise ValueError(f"the frame rate must be > 0; got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, path.suffix or ".mp4")  # OpenCV picks the container by the extension
    writer = annotator = None
    written = 0
    try:
        for t, frame in enumerate(frames):
            if t >= n:
                raise ValueError(f"more frames than the {n} scores")
            frame = _rgb(frame)
            if writer is None:
                size = frame.shape[:2]
                annotator = _Annotator(*size, fps, threshold, events)
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC), float(fps),
                                         (size[1] + size[1] % 2, size[0] + size[0] % 2))
                if not writer.isOpened():
                    raise VadError(f"{path}: OpenCV {cv2.__version__} cannot open an {FOURCC} video writer "
                                   f"({size[1]}x{size[0]} at {fps:g} fps)")
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, frame 0 {size[1]}x{size[0]}")
            image = overlay(frame, heat[t]) if heat is not None else frame.copy()
            image = annotator.draw(image, t, fused[t])
            if size[0] % 2 or size[1] % 2:
                image = cv2.copyMakeBorder(image, 0, size[0] % 2, 0, size[1] % 2, cv2.BORDER_REPLICATE)
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            written += 1
            if progress is not None:
                progress(1)
        if written != n:
            raise ValueError(f"{written} frames for {n} scores")
        writer.release()
        writer = None
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise VadError(f"{path}: OpenCV wrote no video")
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return written


def _url(rel: str) -> str:
    """A relative path as an escaped link target (a '#', '?' or '%' in a video id stays part of the name)."""
    return html.escape(quote(str(rel)))


def _value(value) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_detect_report(out: Path, videos: Sequence[dict], threshold: float, settings: dict) -> Path:
    """`out/index.html`: the settings, then per video its timeline, warnings, annotated video, a table of its
    events and their thumbnails (paths relative to `out`, the run folder). Returns the page's path."""
    e = html.escape
    out = Path(out)
    total = sum(len(v["events"]) for v in videos)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>vad detect</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left}td.n{text-align:right}img,video{max-width:100%;border:1px solid #eee}"
             "figure{display:inline-block;margin:0.5em}.warn{color:#a00}</style></head><body>",
             f"<h1>Anomaly events</h1><p>{len(videos)} video{'' if len(videos) == 1 else 's'}, {total} "
             f"event{'' if total == 1 else 's'} above the threshold {threshold:.3f}.</p>",
             "<h2>Settings</h2><table>"]
    parts += [f"<tr><th>{e(str(k))}</th><td>{e(_value(v))}</td></tr>" for k, v in settings.items()]
    parts.append("</table>")
    if len(videos) > 1:
        parts.append("<table><tr><th>video</th><th>events</th></tr>")
        parts += [f"<tr><td><a href='#video-{i}'>{e(str(v['id']))}</a></td><td class='n'>{len(v['events'])}</td>"
                  "</tr>" for i, v in enumerate(videos, start=1)]
        parts.append("</table>")
    for i, v in enumerate(videos, start=1):
        events, fps, frames = v["events"], float(v["fps"]), int(v["frames"])
        parts.append(f"<h2 id='video-{i}'>{e(str(v['id']))}</h2><p>source <code>{e(str(v.get('path', '')))}</code>,"
                     f" {frames} frames at {fps:g} fps ({clock(frames / fps) if fps > 0 else '?'}), {len(events)} "
                     f"event{'' if len(events) == 1 else 's'}.</p>")
        parts += [f"<p class='warn'>{e(str(w))}</p>" for w in v.get("warnings") or []]
        if v.get("timeline"):
            parts.append(f"<p><a href='{_url(v['timeline'])}'><img src='{_url(v['timeline'])}' "
                         f"alt='timeline of {e(str(v['id']))}'></a></p>")
        if v.get("video"):
            parts.append(f"<p><video controls preload='metadata' src='{_url(v['video'])}'></video><br>"
                         f"<a href='{_url(v['video'])}'>{e(str(v['video']))}</a></p>")
        if not events:
            parts.append("<p>no events above the threshold</p>")
            continue
        parts.append("<table><tr><th>event</th><th>start - end</th><th>duration</th><th>peak</th>"
                     "<th>peak score</th><th>branch</th></tr>")
        parts += [f"<tr><td class='n'>{ev.index}</td><td>{clock(ev.start_s)} - {clock(ev.end_s)}</td>"
                  f"<td class='n'>{ev.duration_s:.2f} s</td><td>{clock(ev.peak_s)}</td>"
                  f"<td class='n'>{ev.peak_score:.2f}</td><td>{e(ev.branch)}</td></tr>" for ev in events]
        parts.append("</table>")
        for ev in events:
            if ev.thumbnail:
                caption = f"event {ev.index}, peak {clock(ev.peak_s)}"
                parts.append(f"<figure><a href='{_url(ev.thumbnail)}'><img src='{_url(ev.thumbnail)}' "
                             f"alt='{e(caption)}'></a><figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "index.html", "\n".join(parts) + "\n")
