"""`vad detect`'s output rendering (mtvad.detect.render) on tiny inputs: the heat overlay, thumbnails, the
timeline figure, the annotated MP4 read back with OpenCV, and the HTML page."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import pytest
from PIL import Image

from mtvad.detect.events import Event, clock
from mtvad.detect.render import (overlay, timeline_figure, write_annotated_video, write_detect_report,
                                 write_thumbnail)
from mtvad.errors import VadError
from tests.videos import decoded, video_info

cv2 = pytest.importorskip("cv2")

H, W = 48, 64
GREY = 128


def grey_frames(n: int, size=(H, W)) -> list[np.ndarray]:
    return [np.full((*size, 3), GREY, np.uint8) for _ in range(n)]


def event(index: int, start: int, end: int, fps: float, video: str = "cam", thumbnail: str | None = None) -> Event:
    return Event(video, index, start, end, fps, (start + end) // 2, 1.8, "motion", {"motion": 1.8}, thumbnail)


def read_back(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int], int]:
    """(decoded RGB frames, fps, (H, W), frames counted with grab())."""
    grabbed, fps, size = video_info(path)
    return decoded(path), fps, size, grabbed


def is_red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 170 and g < 90 and b < 90


def is_green(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return g > r + 60 and g > b + 60


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
    frame = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    original = frame.copy()
    heat = np.zeros((6, 8), np.float32)
    heat[:, :2] = np.nan
    heat[2:4, 5:8] = 1.0  # hot block: rows 16-31, columns 40-63 once resized
    out = overlay(frame, heat)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, original)  # the input is not drawn on
    np.testing.assert_array_equal(out[:, :24], frame[:, :24])  # heat 0 and NaN, away from the hot block
    np.testing.assert_array_equal(out[40:], frame[40:])
    hot = out[20:28, 48:60].astype(int) - frame[20:28, 48:60]
    assert np.abs(hot).mean() > 40
    # heat 1 is inferno's pale yellow: the blend pulls a grey frame more than half way towards it
    yellow = np.asarray(matplotlib.colormaps["inferno"](1.0)[:3]) * 255
    grey = overlay(np.full((H, W, 3), GREY, np.uint8), np.ones((6, 8)))[H // 2, W // 2]
    assert np.linalg.norm(grey - yellow) < 0.5 * np.linalg.norm(GREY - yellow)
    np.testing.assert_array_equal(overlay(frame, np.full((6, 8), np.nan)), frame)


def test_thumbnail_is_frame_and_overlay_side_by_side(tmp_path):
    frame = np.full((H, W, 3), GREY, np.uint8)
    heat = np.zeros((H, W), np.float32)
    heat[:, W // 2 :] = 1.0
    path = tmp_path / "thumbs" / "cam-e01.png"
    write_thumbnail(path, frame, heat, "cam2 event 3 · 00:01:23.40 · motion 2.31", width=100)
    image = np.asarray(Image.open(path).convert("RGB"))
    scaled_h = round(H * 100 / W)
    assert image.shape[1] == 200
    assert scaled_h + 10 < image.shape[0] < scaled_h + 40  # a caption strip above the pictures
    bottom = image[-scaled_h:]
    assert np.abs(bottom[:, :100].astype(int) - GREY).max() <= 2  # the plain frame on the left
    assert np.abs(bottom[:, 180:].astype(int) - GREY).mean() > 40  # the hot half of the overlay on the right
    assert np.abs(bottom[:, 100:140].astype(int) - GREY).max() <= 2  # its cold half
    assert image[: image.shape[0] - scaled_h].max() > 200  # the caption's white text


@pytest.mark.parametrize("fps", [12.5, 7.0])
def test_annotated_video_has_every_frame_at_the_fps_and_size(tmp_path, fps):
    n = 24
    out = tmp_path / "videos" / "cam.mp4"
    ticks = []
    written = write_annotated_video(out, iter(grey_frames(n)), fps, np.zeros((n, 6, 8), np.float16),
                                    np.linspace(0, 2, n), 1.0, [event(1, 10, 15, fps)], progress=ticks.append)
    frames, read_fps, size, grabbed = read_back(out)
    assert written == n == grabbed == len(frames)
    assert read_fps == pytest.approx(fps, abs=1e-3)
    assert size == (H, W) and frames[0].shape == (H, W, 3)
    assert ticks == [1] * n
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam.mp4"]  # no temporary file left


def test_annotated_video_frames_events_in_red_and_draws_the_score_bar(tmp_path):
    n, fps, threshold = 20, 10.0, 1.0
    fused = np.full(n, 0.5)
    fused[8:13] = 1.8
    fused[3] = np.nan
    out = tmp_path / "cam.mp4"
    write_annotated_video(out, iter(grey_frames(n)), fps, np.zeros((n, 6, 8), np.float32), fused, threshold,
                          [event(1, 8, 12, fps)])
    frames = read_back(out)[0]
    border = (H // 2, 1)  # mid-height on the left edge
    for t in (8, 10, 12):
        assert is_red(frames[t][border]) and is_red(frames[t][0, W // 2]), t
    for t in (0, 3, 7, 13, 19):
        assert np.abs(frames[t][border].astype(int) - GREY).max() < 30, t
    bar = (H - 5, 8)  # inside the bar, near its start: filled at any score above a fifth of 2 x threshold
    assert is_green(frames[0][bar]) and is_red(frames[10][bar])
    assert not is_green(frames[3][bar]) and not is_red(frames[3][bar])  # NaN: an empty bar
    far = (H - 5, 44)  # 70 % along the bar: 1.8 (90 %) reaches it, 0.5 (25 %) does not
    assert not is_red(frames[0][far]) and not is_green(frames[0][far]) and is_red(frames[10][far])


@pytest.mark.parametrize("given", [19, 21])
def test_annotated_video_refuses_a_wrong_frame_count(tmp_path, given):
    out = tmp_path / "cam.mp4"
    with pytest.raises(ValueError, match="20"):
        write_annotated_video(out, iter(grey_frames(given)), 10.0, None, np.zeros(20), 1.0, [])
    assert list(tmp_path.iterdir()) == []  # neither the MP4 nor its temporary file


def test_annotated_video_writer_failure_is_one_line_naming_the_path(tmp_path):
    out = tmp_path / "cam.unknown-container"
    with pytest.raises(VadError, match="cam.unknown-container") as info:
        write_annotated_video(out, iter(grey_frames(3)), 10.0, None, np.zeros(3), 1.0, [])
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_annotated_video_of_odd_size_is_padded_to_even(tmp_path):
    out = tmp_path / "odd.mp4"
    write_annotated_video(out, iter(grey_frames(5, (47, 63))), 10.0, None, np.zeros(5), 1.0, [])
    _, _, size, grabbed = read_back(out)
    assert size == (48, 64) and grabbed == 5


def pink_pixels(path: Path) -> int:
    """Pixels of an event's shading (red at alpha 0.15 over white)."""
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(image - (255, 217, 217)).max(axis=2) <= 2).sum())


def test_timeline_figure_shades_events(tmp_path):
    fps, n = 12.5, 30
    fused = np.sin(np.arange(n) / 3) + 0.5
    fused[5:8] = np.nan
    branches = {"appearance": fused * 0.8, "motion": fused * 0.9}
    with_events, without = tmp_path / "timelines" / "cam.png", tmp_path / "quiet.png"
    timeline_figure(with_events, "cam$1", fps, fused, 1.0, [event(1, 12, 20, fps)], branches)
    timeline_figure(without, "quiet", fps, np.full(n, np.nan), 1.0, [])
    for path in (with_events, without):
        width, height = Image.open(path).size
        assert 800 <= width <= 1200 and 250 <= height <= 400
    assert pink_pixels(with_events) > 20000  # 9 of 30 frames: ~250 px of the axes, ~200 px high
    assert pink_pixels(without) == 0


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("src", "href") and not v.startswith("#")]


def test_report_lists_every_event_and_escapes_user_text(tmp_path):
    fps = 10.0
    odd_id = "<cam&1>#%41"  # HTML to escape; "#" and "%41" break a link unless quoted
    events = [event(1, 10, 24, fps, odd_id, "thumbnails/<cam&1>#%41-e01.png"),
              event(2, 40, 44, fps, odd_id, "thumbnails/<cam&1>#%41-e02.png")]
    for e in events:
        write_thumbnail(tmp_path / e.thumbnail, grey_frames(1)[0], np.zeros((6, 8)), f"{odd_id} event {e.index}")
    timeline_figure(tmp_path / "timelines" / f"{odd_id}.png", odd_id, fps, np.zeros(60), 1.0, events)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / f"{odd_id}.mp4").write_bytes(b"")
    videos = [{"id": odd_id, "path": "/footage/<cam&1>.mp4", "fps": fps, "frames": 60,
               "timeline": f"timelines/{odd_id}.png", "events": events, "video": f"videos/{odd_id}.mp4",
               "warnings": ["the <b>scene</b> differs"]},
              {"id": "quiet", "path": "/footage/quiet.mp4", "fps": fps, "frames": 30, "timeline": None,
               "events": []}]
    page = write_detect_report(tmp_path, videos, 1.0, {"threshold": "1.0000", "merge gap": "1 s",
                                                        "store": "runs/<x>/store.zarr"})
    assert page == tmp_path / "index.html"
    text = page.read_text()
    for raw in (odd_id, "<b>scene", "runs/<x>"):
        assert raw not in text
    assert "&lt;cam&amp;1&gt;" in text and "&lt;b&gt;scene" in text and "merge gap" in text
    for e in events:
        assert f"{clock(e.start_s)} - {clock(e.end_s)}" in text
        assert f"{e.duration_s:.2f} s" in text
    assert text.count("no events above the threshold") == 1
    assert "<video controls" in text
    links = _Links()
    links.feed(text)
    assert len(links.targets) >= 6  # timeline (img + link), video (src + link), 2 thumbnails (img + link) each
    for target in links.targets:  # every link opens its file, '<', '&' and all
        assert (tmp_path / unquote(target)).exists(), target
    assert not list(tmp_path.glob(".index*"))
