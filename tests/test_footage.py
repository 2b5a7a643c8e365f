"""`vad detect`'s inputs: a camera's footage written as real video files (MJPG .avi, mp4v .mp4) and frame folders,
cut into segments (mtvad.precompute.datasets.footage), and the checks that a new video fits the normal footage
(mtvad.detect.scene)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtvad.detect import scene
from mtvad.detect.scene import footage_warnings
from mtvad.errors import DatasetError
from mtvad.precompute.datasets.base import FrameFolder, Video
from mtvad.precompute.datasets.footage import Footage, FrameRange, segment_bounds
from tests.videos import decoded
from tests.videos import write_video as write_any_video

FPS = 12.5
SIZE = (48, 64)  # H, W


def texture(seed: int, size=SIZE) -> np.ndarray:
    """A smooth random grey background (coarse noise upscaled), as uint8 (H, W)."""
    coarse = np.random.default_rng(seed).integers(30, 220, size=(6, 8)).astype(np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def scene_frames(n: int, seed: int = 0, size=SIZE) -> np.ndarray:
    """n RGB frames: a fixed background (seed), a bright square moving across it, and the frame index as a grey
    level in the top-left corner (so frames differ from one another)."""
    frames = np.repeat(texture(seed, size)[None, :, :, None], n, axis=0).repeat(3, axis=3)
    h, w = size
    for t in range(n):
        x = (3 * t) % (w - 10)
        frames[t, h // 2 : h // 2 + 8, x : x + 8] = 250
        frames[t, :6, :6] = (7 * t) % 256
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = FPS, fourcc: str = "MJPG") -> Path:
    return write_any_video(path, frames, fps, fourcc)


def write_frame_folder(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def ids_and_frames(videos) -> list[tuple[str, int]]:
    return [(v.id, v.n_frames) for v in videos]


# --- segments ---------------------------------------------------------------------------------------------------


def test_normal_footage_is_cut_into_segments_and_a_short_remainder_joins_the_last(tmp_path):
    normal = write_video(tmp_path / "cam.avi", scene_frames(60))
    new = write_video(tmp_path / "new.mp4", scene_frames(30, seed=1), fourcc="mp4v")
    footage = Footage([normal], [new], segment_seconds=2.0)  # 25 frames a segment; 60 = 25 + 35 (10 < 12.5)
    assert ids_and_frames(footage.videos("train")) == [("cam-s01", 25), ("cam-s02", 35)]
    assert ids_and_frames(footage.videos("test")) == [("new", 30)]
    assert [v.split for v in footage.videos()] == ["train", "train", "test"]


def test_a_remainder_of_half_a_segment_or_more_is_a_segment_of_its_own(tmp_path):
    footage = Footage([write_video(tmp_path / "cam.avi", scene_frames(40))], segment_seconds=2.0)
    assert ids_and_frames(footage.videos("train")) == [("cam-s01", 25), ("cam-s02", 15)]  # 15 >= 12.5
    assert segment_bounds(37, 25) == [(0, 37)] and segment_bounds(38, 25) == [(0, 25), (25, 38)]
    assert segment_bounds(30, 20) == [(0, 20), (20, 30)]  # exactly half a segment is not shorter than half


def test_segment_ids_share_one_zero_padded_width_and_zero_seconds_means_no_cut(tmp_path):
    path = write_video(tmp_path / "cam.avi", scene_frames(60))
    many = list(Footage([path], segment_seconds=0.4).videos("train"))  # 5 frames a segment: 12 segments
    assert [v.id for v in many] == [f"cam-s{k:02d}" for k in range(1, 13)]
    assert sum(v.n_frames for v in many) == 60
    assert ids_and_frames(Footage([path], segment_seconds=0).videos("train")) == [("cam", 60)]
    assert ids_and_frames(Footage([path], segment_seconds=10).videos("train")) == [("cam", 60)]  # shorter


def test_a_segment_reads_the_frames_of_its_place_in_the_file(tmp_path):
    path = write_video(tmp_path / "cam.avi", scene_frames(60))
    second = list(Footage([path], segment_seconds=2.0).videos("train"))[1]
    assert isinstance(second.source, FrameRange) and second.source.path == str(path.absolute())
    file_frames = decoded(path)
    block = second.read(3, 6)
    assert block.shape == (3, *SIZE, 3)
    for k in range(3):
        np.testing.assert_array_equal(block[k], file_frames[25 + 3 + k])
    assert not np.array_equal(block[0], file_frames[3])  # not the file's own frame 3
    with pytest.raises(IndexError):
        second.read(30, 36)  # past the segment's 35 frames, though the file has them


def test_meta_holds_fps_source_and_first_frame(tmp_path):
    normal = write_video(tmp_path / "cam.avi", scene_frames(60))
    new = write_video(tmp_path / "new.avi", scene_frames(20))
    footage = Footage([normal], [new], segment_seconds=2.0)
    train = list(footage.videos("train"))
    assert [v.meta for v in train] == [{"fps": FPS, "source_path": str(normal.absolute()), "first_frame": f}
                                       for f in (0, 25)]
    assert next(footage.videos("test")).meta == {"fps": FPS, "source_path": str(new.absolute()), "first_frame": 0}
    assert footage.fps_of("new") == FPS and footage.fps_of("cam-s02", "train") == FPS
    assert footage.root == tmp_path.absolute()
    with pytest.raises(DatasetError, match="nope"):
        footage.fps_of("nope")


def test_a_segment_pickles_small_and_reads_the_same_after(tmp_path):
    path = write_video(tmp_path / "cam.avi", scene_frames(60))
    video = list(Footage([path], segment_seconds=2.0).videos("train"))[1]
    data = pickle.dumps(video)
    back = pickle.loads(data)
    assert back == video and len(data) < 1000
    np.testing.assert_array_equal(back.read(0, 2), video.read(0, 2))


# --- frame folders, folders of videos, fps ------------------------------------------------------------------------


def test_a_frame_folder_takes_the_given_fps_and_its_segments_hold_only_their_files(tmp_path):
    frames = scene_frames(30)
    folder = write_frame_folder(tmp_path / "cam1", frames)
    footage = Footage([folder], [folder], segment_seconds=1.0, fps=10)  # 10 frames a segment
    train = list(footage.videos("train"))
    assert ids_and_frames(train) == [("cam1-s01", 10), ("cam1-s02", 10), ("cam1-s03", 10)]
    assert all(v.meta["fps"] == 10.0 and v.meta["source_path"] == str(folder.absolute()) for v in train)
    assert isinstance(train[1].source, FrameFolder) and len(train[1].source.files) == 10
    np.testing.assert_array_equal(train[1].read(0, 1)[0], frames[10])  # png: lossless
    assert train[2].meta["first_frame"] == 20


def test_a_frame_folder_without_fps_is_refused_naming_it(tmp_path):
    folder = write_frame_folder(tmp_path / "cam1", scene_frames(10))
    with pytest.raises(DatasetError, match=r"cam1: a frame folder has no frame rate: pass --fps"):
        Footage([folder])
    video = write_video(tmp_path / "a.avi", scene_frames(10))
    with pytest.raises(DatasetError, match=r"cam1: .*--fps"):
        Footage([video], [folder])


def test_the_containers_fps_is_used_and_fps_does_not_override_it(tmp_path):
    path = write_video(tmp_path / "cam.mp4", scene_frames(24), fps=8.0, fourcc="mp4v")
    assert next(Footage([path]).videos()).meta["fps"] == 8.0
    assert next(Footage([path], fps=30).videos()).meta["fps"] == 8.0


def test_a_container_without_a_usable_fps_needs_fps(tmp_path):
    path = write_video(tmp_path / "fast.avi", scene_frames(20))
    data = bytearray(path.read_bytes())  # the stream header's rate/scale say 5000 frames per second
    strh = data.find(b"strh") + 8
    data[strh + 20 : strh + 28] = struct.pack("<II", 1, 5000)
    path.write_bytes(bytes(data))
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == 5000
    with pytest.raises(DatasetError, match=r"fast\.avi: its container gives no usable frame rate \(5000\): pass --fps"):
        Footage([path])
    assert next(Footage([path], fps=6).videos()).meta["fps"] == 6.0


def test_a_normal_folder_of_videos_and_frame_folders(tmp_path):
    root = tmp_path / "normal"
    write_video(root / "cam10.avi", scene_frames(12))
    write_video(root / "cam2.mp4", scene_frames(14), fourcc="mp4v")
    write_frame_folder(root / "cam3", scene_frames(11))
    (root / "notes.txt").write_text("not a video")
    footage = Footage([root], segment_seconds=0, fps=5)
    assert ids_and_frames(footage.videos("train")) == [("cam2", 14), ("cam3", 11), ("cam10", 12)]
    assert [v.meta["fps"] for v in footage.videos("train")] == [FPS, 5.0, FPS]
    assert footage.root == root.absolute()


# --- refused inputs ----------------------------------------------------------------------------------------------


def test_two_inputs_with_one_id_are_refused_naming_both(tmp_path):
    a = write_video(tmp_path / "day" / "cam.avi", scene_frames(10))
    b = write_video(tmp_path / "night" / "cam.mp4", scene_frames(10), fourcc="mp4v")
    with pytest.raises(DatasetError, match=r"night/cam\.mp4: .*'cam'.*/day/cam\.avi"):
        Footage([a, b])
    with pytest.raises(DatasetError, match=r"night/cam\.mp4: .*'cam'.*/day/cam\.avi"):
        Footage([a], [a, b])
    assert len(list(Footage([a], [b]).videos())) == 2  # one id in each split is fine


@pytest.mark.parametrize("case", ["missing", "suffix", "empty", "videos as new"])
def test_bad_inputs_are_refused_naming_the_path(tmp_path, case):
    normal = write_video(tmp_path / "cam.avi", scene_frames(10))
    bad = {"missing": tmp_path / "gone.mp4", "suffix": tmp_path / "clip.txt", "empty": tmp_path / "empty",
           "videos as new": tmp_path / "several"}[case]
    if case == "suffix":
        bad.write_text("x")
    elif case == "empty":
        bad.mkdir()
    elif case == "videos as new":
        write_video(bad / "a.avi", scene_frames(10))
    with pytest.raises(DatasetError, match=str(bad)):
        Footage([normal], [bad])
    if case != "videos as new":
        with pytest.raises(DatasetError, match=str(bad)):
            Footage([bad])


def test_no_normal_footage_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="no normal footage given"):
        Footage([], [write_video(tmp_path / "new.avi", scene_frames(10))])


def test_a_truncated_video_file_is_refused_naming_it(tmp_path):
    path = write_video(tmp_path / "cut.avi", scene_frames(40))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut\.avi: .*(truncated|damaged)"):
        list(Footage([path]).videos())


# --- does a new video fit the normal footage? ---------------------------------------------------------------------


class CountingSource:
    """A FrameSource that counts the frames read through it."""

    def __init__(self, source):
        self.source, self.path, self.frames_read = source, source.path, 0

    @property
    def n_frames(self) -> int:
        return self.source.n_frames

    def frame_size(self):
        return self.source.frame_size()

    def read(self, start, stop):
        self.frames_read += stop - start
        return self.source.read(start, stop)


def counted(video: Video) -> Video:
    return Video(video.id, video.split, CountingSource(video.source), meta=video.meta)


def test_no_warning_for_the_same_scene_and_only_a_few_frames_are_read(tmp_path):
    normal = write_video(tmp_path / "cam.avi", scene_frames(60, seed=0))
    new = write_video(tmp_path / "later.mp4", scene_frames(50, seed=0)[::-1].copy(), fourcc="mp4v")
    footage = Footage([normal], [new], segment_seconds=2.0)
    train, test = [counted(v) for v in footage.videos("train")], [counted(v) for v in footage.videos("test")]
    assert footage_warnings(train, test) == []
    assert all(v.source.frames_read <= scene.SAMPLE_FRAMES for v in train + test)


def test_a_new_video_of_another_aspect_ratio_is_warned_about(tmp_path):
    normal = write_video(tmp_path / "cam.avi", scene_frames(30))
    wide = write_video(tmp_path / "wide.avi", scene_frames(30, size=(48, 96)))  # the same texture, stretched
    footage = Footage([normal], [wide])
    lines = footage_warnings(list(footage.videos("train")), list(footage.videos("test")))
    assert len(lines) == 1
    assert lines[0].startswith(f"{wide.absolute()}: its aspect ratio 96x48 (2.00) differs from the normal footage's "
                               f"(64x48, 1.33, of {normal.absolute()})")


def test_a_new_video_of_another_scene_is_warned_about_with_the_normal_footages_own_figure(tmp_path):
    normal = write_video(tmp_path / "cam.avi", scene_frames(60, seed=0))
    same = write_video(tmp_path / "same.avi", scene_frames(20, seed=0))
    other = write_video(tmp_path / "other.avi", scene_frames(20, seed=7))
    footage = Footage([normal], [same, other], segment_seconds=2.0)
    train = list(footage.videos("train"))
    lines = footage_warnings(train, list(footage.videos("test")))
    assert len(lines) == 1
    assert lines[0].startswith(f"{other.absolute()}: does not look like the normal footage's camera")
    similarity = float(lines[0].split("background similarity ")[1].split(",")[0])
    own = float(lines[0].split("segments score ")[1].split(" ")[0])
    assert similarity < scene.SCENE_THRESHOLD < own
    one = footage_warnings(train[:1], list(footage.videos("test")))  # one normal video: no figure of its own
    assert len(one) == 1 and "among themselves" not in one[0]


def test_real_footage_same_camera_passes_and_another_camera_is_warned_about():
    from tests.conftest import shared_path

    vtest = shared_path("data", "vtest", "vtest.avi")
    ped2 = shared_path("data", "ped2", "training", "frames")
    halves = Footage([vtest], [vtest], segment_seconds=40)  # 795 frames at 10 fps: 400 and 395
    assert footage_warnings(list(halves.videos("train")), list(halves.videos("test"))) == []
    cross = Footage([ped2 / "01", ped2 / "02"], [vtest], fps=10)
    lines = footage_warnings(list(cross.videos("train")), list(cross.videos("test")))
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == [
        "its aspect ratio 768x576", "does not look like the normal footage's camera"]
