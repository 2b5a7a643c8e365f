"""Dataset readers over tiny fake datasets in each real layout, bad inputs, and two smoke tests on real data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mtvad.errors import DatasetError
from mtvad.precompute.datasets import DATASETS, open_dataset
from mtvad.precompute.datasets.base import FrameFolder, Video, VideoFile
from mtvad.precompute.datasets.labels import load_ffp_mat, parse_ucsd_m
from tests.fakes import (
    SIZE,
    default_ranges,
    frame_index,
    labels_of,
    shanghaitech_labels,
    write_avenue,
    write_avi,
    write_ffp_mat,
    write_folder,
    write_frames,
    write_m_file,
    write_shanghaitech,
    write_ucsd_frames,
    write_ucsd_official,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
PED2 = SHARED / "data" / "ped2"
VTEST = SHARED / "data" / "vtest"


def by_key(videos):
    return {(v.split, v.id): v for v in videos}


def assert_frames_aligned(video: Video) -> None:
    """Every frame decodes to its own index, so labels/masks indexed by position refer to the right frame."""
    frames = video.read(0, video.n_frames)
    assert frames.dtype == np.uint8 and frames.shape == (video.n_frames, *SIZE, 3)
    assert [frame_index(f) for f in frames] == list(range(video.n_frames))


def assert_ground_truth(video: Video, ranges, with_masks: bool) -> None:
    expected = labels_of(ranges, video.n_frames)
    np.testing.assert_array_equal(video.labels, expected)
    assert video.labels.dtype == np.uint8
    if with_masks:
        masks = video.read_masks(0, video.n_frames)
        assert masks.dtype == bool and masks.shape == (video.n_frames, *SIZE)
        np.testing.assert_array_equal(masks.reshape(len(masks), -1).any(axis=1), expected.astype(bool))
    else:
        assert video.masks is None


# --- UCSD ----------------------------------------------------------------------------------------------------


def test_ucsd_official_layout(tmp_path):
    root = write_ucsd_official(tmp_path / "UCSDped2", n_train=2, n_test=3, masks_for=(1, 3))
    videos = list(open_dataset("ped2", root).videos())
    assert [(v.split, v.id) for v in videos] == [
        ("train", "01"), ("train", "02"), ("test", "01"), ("test", "02"), ("test", "03"),
    ]
    ranges = default_ranges(3, 6)
    for v in videos:
        assert v.validate() == SIZE
        assert v.meta["layout"] == "official"
        assert_frames_aligned(v)  # the ._001.tif junk file is not a frame
        if v.split == "test":
            assert_ground_truth(v, ranges[int(v.id) - 1], with_masks=v.id in ("01", "03"))
        else:
            assert v.labels is None and v.masks is None
    assert videos[2].meta["folder"] == "Test001"


def test_ucsd_root_may_be_the_parent_folder(tmp_path):
    write_ucsd_official(tmp_path / "UCSDped2", n_train=1, n_test=1)
    dataset = open_dataset("ped2", tmp_path)
    assert dataset.root == tmp_path / "UCSDped2"
    assert [v.id for v in dataset.videos("test")] == ["01"]


def test_synth_reads_the_official_layout_with_any_m_file(tmp_path):
    root = write_ucsd_official(tmp_path / "synth", n_train=1, n_test=2, m_name="synthetic.m")
    test = list(open_dataset("synth", root).videos("test"))
    assert [v.id for v in test] == ["01", "02"]
    assert_ground_truth(test[1], default_ranges(2, 6)[1], with_masks=False)


@pytest.mark.parametrize("labels", ["m", "mat", "npy"])
def test_ucsd_frames_layout(tmp_path, labels):
    root = write_ucsd_frames(tmp_path / "ped2", n_train=1, n_test=2, labels=labels, masks_for=(2,))
    videos = by_key(open_dataset("ped2", root).videos())
    assert sorted(videos) == [("test", "01"), ("test", "02"), ("train", "01")]
    ranges = default_ranges(2, 6)
    for k in (1, 2):
        video = videos["test", f"{k:02d}"]
        assert video.meta == {"layout": "frames", "folder": f"{k:02d}"}
        assert video.validate() == SIZE
        assert_frames_aligned(video)  # 000.jpg is frame 0, labelled by 1-based range entry 1
        assert_ground_truth(video, ranges[k - 1], with_masks=k == 2)


def test_ucsd_layouts_agree(tmp_path):
    official = list(open_dataset("ped2", write_ucsd_official(tmp_path / "a", masks_for=())).videos())
    frames = list(open_dataset("ped2", write_ucsd_frames(tmp_path / "b", masks_for=())).videos())
    assert [(v.split, v.id, v.n_frames) for v in official] == [(v.split, v.id, v.n_frames) for v in frames]
    for a, b in zip(official, frames):
        assert (a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels)


def test_ucsd_test_folder_with_some_videos_maps_labels_by_number(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=1, n_test=3, present=(2,), labels="m")
    (video,) = open_dataset("ped2", root).videos("test")
    assert video.id == "02"
    assert_ground_truth(video, default_ranges(3, 6)[1], with_masks=False)


def test_ucsd_without_label_file_has_no_labels(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=0, n_test=1, labels=None, masks_for=())
    (video,) = open_dataset("ped2", root).videos()
    assert video.labels is None and video.masks is None


def test_m_parser_reads_ped1_forms(tmp_path):
    path = tmp_path / "UCSDped1.m"
    path.write_text(
        "TestVideoFile = {};\n"
        "TestVideoFile{end+1}.gt_frame = [61:180];\n"
        "TestVideoFile{end+1}.gt_frame = [5:90, 140:200];  % two events\n"
        "TestVideoFile{end+1}.gt_frame = [7];\n"
        "TestVideoFile{end+1}.gt_frame = [ 1 : 3 ,9 ];\n"
        "TestVideoFile{end+1}.gt_frame = [];\n"
    )
    assert parse_ucsd_m(path) == [[(61, 180)], [(5, 90), (140, 200)], [(7, 7)], [(1, 3), (9, 9)], []]


def test_ffp_mat_reads_single_and_multiple_ranges(tmp_path):
    table = [[(61, 180)], [(5, 90), (140, 200)]]
    assert load_ffp_mat(write_ffp_mat(tmp_path / "ped2.mat", table)) == table


def test_m_range_beyond_the_video_names_file_and_video(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=0, n_test=1, labels=None)
    m_file = write_m_file(root / "gt" / "UCSDped2.m", [[(3, 7)]])  # the video has 6 frames
    with pytest.raises(DatasetError, match=r"UCSDped2\.m.*3:7.*test video 1.*6 frames"):
        list(open_dataset("ped2", root).videos())
    assert m_file.exists()


def test_m_file_without_the_video_names_it(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=0, n_test=3, present=(3,), labels=None)
    write_m_file(root / "gt" / "UCSDped2.m", default_ranges(2, 6))
    with pytest.raises(DatasetError, match=r"UCSDped2\.m: has ground truth for 2 test videos, none for video 3"):
        list(open_dataset("ped2", root).videos("test"))


def test_concatenated_npy_of_wrong_length_names_it(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=0, n_test=2, labels="npy")
    np.save(root / "frame_labels_ped2.npy", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"frame_labels_ped2\.npy: 11 frame labels but the 2 test videos"):
        list(open_dataset("ped2", root).videos("test"))


def test_mask_folder_of_wrong_length_fails_validation(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=0, n_test=1, masks_for=(1,))
    (root / "gt" / "Test001_gt" / "006.bmp").unlink()
    (video,) = open_dataset("ped2", root).videos()
    with pytest.raises(DatasetError, match=r"Test001_gt: 5 pixel masks for a video of 6 frames"):
        video.validate()


# --- Avenue --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["mask", "mat"])
def test_avenue(tmp_path, labels):
    root = write_avenue(tmp_path / "avenue", n_train=1, n_test=2, labels=labels)
    videos = list(open_dataset("avenue", root).videos())
    assert [(v.split, v.id) for v in videos] == [("train", "01"), ("test", "01"), ("test", "02")]
    assert all(isinstance(v.source, VideoFile) for v in videos)
    ranges = default_ranges(2, 6)
    for v in videos:
        assert v.validate() == SIZE
        assert_frames_aligned(v)
        if v.split == "test":
            assert_ground_truth(v, ranges[int(v.id) - 1], with_masks=labels == "mask")


def test_avenue_without_ground_truth(tmp_path):
    root = write_avenue(tmp_path, n_train=0, n_test=1, labels=None)
    (video,) = open_dataset("avenue", root).videos()
    assert video.labels is None and video.masks is None


# --- ShanghaiTech --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_as", ["videos", "frames"])
def test_shanghaitech(tmp_path, train_as):
    root = write_shanghaitech(tmp_path, train_as=train_as)
    videos = list(open_dataset("shanghaitech", root).videos())
    assert [(v.split, v.id, v.meta["scene"]) for v in videos] == [
        ("train", "01_001", "01"), ("train", "02_001", "02"), ("test", "01_0014", "01"), ("test", "02_0001", "02"),
    ]
    assert isinstance(videos[0].source, VideoFile if train_as == "videos" else FrameFolder)
    for v in videos:
        assert v.validate() == SIZE
        assert_frames_aligned(v)
    test = videos[2]
    np.testing.assert_array_equal(test.labels, shanghaitech_labels(6))
    masks = test.read_masks(1, 4)
    assert masks.shape == (3, *SIZE) and masks.dtype == bool
    assert [m.any() for m in masks] == [False, True, True]


def test_shanghaitech_scene_option(tmp_path):
    root = write_shanghaitech(tmp_path, train_as="frames")
    assert [v.id for v in open_dataset("shanghaitech", root, scene=2).videos()] == ["02_001", "02_0001"]


def test_shanghaitech_labels_of_wrong_length_name_the_file(tmp_path):
    root = write_shanghaitech(tmp_path, train=(), test=("01_0014",))
    bad = root / "testing" / "test_frame_mask" / "01_0014.npy"
    np.save(bad, np.zeros(5, dtype=np.int64))
    with pytest.raises(DatasetError, match=r"01_0014\.npy: 5 frame labels for a video of 6 frames"):
        list(open_dataset("shanghaitech", root).videos("test"))


# --- Folder --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [".npy", ".txt"])
def test_folder_with_train_and_test(tmp_path, labels):
    root = write_folder(
        tmp_path, train=("cam1", "cam2"), test=("cam3", "door"), as_frames=("cam2", "door"), labels=labels
    )
    videos = list(open_dataset("folder", root).videos())
    assert [(v.split, v.id) for v in videos] == [
        ("train", "cam1"), ("train", "cam2"), ("test", "cam3"), ("test", "door"),
    ]
    assert [type(v.source) for v in videos] == [VideoFile, FrameFolder, VideoFile, FrameFolder]
    for v in videos:
        assert v.validate() == SIZE
        assert_frames_aligned(v)
        expected = shanghaitech_labels(6) if v.split == "test" else None
        assert (v.labels is None) if expected is None else np.array_equal(v.labels, expected)


def test_folder_of_videos_is_one_split(tmp_path):
    write_avi(tmp_path / "street.avi", 6)
    write_frames(tmp_path / "yard", 6)
    dataset = open_dataset("folder", tmp_path, split="test")
    assert [(v.split, v.id) for v in dataset.videos()] == [("test", "street"), ("test", "yard")]
    assert list(dataset.videos("train")) == []


def test_folder_labels_of_wrong_length_fail_validation(tmp_path):
    root = write_folder(tmp_path, train=(), test=("cam2",), labels=".npy")
    np.save(root / "labels" / "cam2.npy", np.zeros(4, dtype=np.uint8))
    (video,) = open_dataset("folder", root).videos()  # a video file is not decoded while listing
    with pytest.raises(DatasetError, match=r"cam2\.avi: 4 frame labels for a video of 6 frames"):
        video.validate()


def test_folder_rejects_non_binary_labels(tmp_path):
    root = write_folder(tmp_path, train=(), test=("cam2",), as_frames=("cam2",), labels=".txt")
    (root / "labels" / "cam2.txt").write_text("0\n1\n2\n0\n0\n0\n")
    with pytest.raises(DatasetError, match=r"cam2\.txt: frame labels must be 0 or 1"):
        list(open_dataset("folder", root).videos())


def test_duplicate_video_ids_are_rejected(tmp_path):
    write_avi(tmp_path / "train" / "cam1.avi", 3)
    write_frames(tmp_path / "train" / "cam1", 3)
    with pytest.raises(DatasetError, match=r"video id 'cam1' is also used by"):
        list(open_dataset("folder", tmp_path).videos())


# --- video files, pickling -----------------------------------------------------------------------------------


def test_video_file_block_read_matches_sequential_decode(tmp_path):
    video = VideoFile.open(write_avi(tmp_path / "v.avi", 12))
    assert video.n_frames == 12 and video.frame_size() == SIZE
    whole = video.read(0, 12)
    np.testing.assert_array_equal(video.read(7, 10), whole[7:10])
    with pytest.raises(IndexError):
        video.read(10, 13)


def test_videos_pickle(tmp_path):
    root = write_ucsd_official(tmp_path, n_train=0, n_test=1)
    (video,) = open_dataset("ped2", root).videos()
    copy = pickle.loads(pickle.dumps(video))
    np.testing.assert_array_equal(copy.read(0, 2), video.read(0, 2))
    np.testing.assert_array_equal(copy.labels, video.labels)


# --- bad input -----------------------------------------------------------------------------------------------


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(DatasetError, match=r"unknown dataset 'ped3'; known datasets: ped1, ped2, synth, avenue"):
        open_dataset("ped3", ".")


def test_unknown_option_is_a_dataset_error(tmp_path):
    write_frames(tmp_path / "train" / "a", 2)
    with pytest.raises(DatasetError, match=r"'ped2' does not take option\(s\) scene"):
        open_dataset("ped2", tmp_path, scene="01")


def test_unknown_split(tmp_path):
    root = write_ucsd_official(tmp_path, n_train=1, n_test=0)
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        open_dataset("ped2", root).videos("val")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_folder_says_where_to_download(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as err:
        open_dataset(name, missing)
    assert str(missing) in str(err.value) and DATASETS[name].HELP in str(err.value)


@pytest.mark.parametrize(
    "name, url",
    [("ped2", "svcl.ucsd.edu"), ("avenue", "cse.cuhk.edu.hk"), ("shanghaitech", "svip-lab.github.io")],
)
def test_empty_folder_says_where_to_download(tmp_path, name, url):
    with pytest.raises(DatasetError, match="is empty") as err:
        open_dataset(name, tmp_path)
    assert str(tmp_path) in str(err.value) and url in str(err.value)


@pytest.mark.parametrize("name", ["ped2", "avenue", "shanghaitech"])
def test_folder_of_another_layout_says_what_is_expected(tmp_path, name):
    (tmp_path / "readme.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match=r"no .*folder.*Expected") as err:
        open_dataset(name, tmp_path)
    assert str(tmp_path) in str(err.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=1, n_test=0, labels=None)
    bad = root / "training" / "frames" / "01" / "003.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    (video,) = open_dataset("ped2", root).videos()
    video.read(0, 3)
    with pytest.raises(DatasetError, match=r"003\.jpg: unreadable or truncated image"):
        video.read(2, 5)


def test_frames_of_different_sizes_fail_validation(tmp_path):
    root = write_ucsd_frames(tmp_path, n_train=1, n_test=0, labels=None)
    write_frames(tmp_path / "odd", 5, size=(20, 36))
    odd = root / "training" / "frames" / "01" / "004.jpg"
    (tmp_path / "odd" / "004.jpg").replace(odd)
    (video,) = open_dataset("ped2", root).videos()
    with pytest.raises(DatasetError, match=r"004\.jpg: frame is 36x20 \(WxH\) but .*000\.jpg is 36x24"):
        video.validate()


def test_video_of_one_frame_fails_validation(tmp_path):
    write_avi(tmp_path / "train" / "short.avi", 1)
    (video,) = open_dataset("folder", tmp_path).videos()
    with pytest.raises(DatasetError, match=r"short\.avi: video has 1 frame\(s\), at least 2"):
        video.validate()


# --- real data (../shared beside the repository) -------------------------------------------------------------


@pytest.mark.skipif(not PED2.is_dir(), reason=f"real UCSD Ped2 subset not found at {PED2}")
def test_real_ped2():
    from mtvad.precompute.datasets.base import read_image

    videos = by_key(open_dataset("ped2", PED2).videos())
    assert sum(s == "train" for s, _ in videos) == 16 and sum(s == "test" for s, _ in videos) == 6
    assert videos["train", "01"].read(0, 1).shape == (1, 240, 360, 3)
    test = videos["test", "01"]
    assert test.labels.sum() == 120 and test.labels[59] == 0 and test.labels[60] == 1
    assert all(videos["test", f"{k:02d}"].masks is not None for k in range(1, 7))
    mask_file = PED2 / "gt" / "Test001_gt" / "100.bmp"
    np.testing.assert_array_equal(test.read_masks(99, 100)[0], read_image(mask_file, "L") > 0)
    assert test.validate() == (240, 360) and videos["test", "06"].validate() == (240, 360)  # frame001.bmp names


@pytest.mark.skipif(not VTEST.is_dir(), reason=f"OpenCV sample video not found at {VTEST}")
def test_real_video_file_seeks_exactly():
    import cv2

    (video,) = open_dataset("folder", VTEST, split="train").videos()
    assert (video.id, video.split) == ("vtest", "train")
    assert video.n_frames == 795 and video.validate() == (576, 768)
    block = video.read(400, 404)
    cap = cv2.VideoCapture(str(VTEST / "vtest.avi"))
    for _ in range(400):
        assert cap.grab()
    sequential = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(4)]
    cap.release()
    np.testing.assert_array_equal(block, np.stack(sequential))


# --- truncated and damaged video files (issue 12, class 4) ---------------------------------------------------


def cut_bytes(path: Path, keep: int | float) -> Path:
    """Cut a file to its first `keep` bytes (or that fraction of them), as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    return path


def write_textured_avi(path: Path, n: int, fourcc: str = "XVID") -> Path:
    """An AVI of n textured frames (noise that the codec cannot squeeze into a few bytes)."""
    import cv2

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for _ in range(n):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_video_file_cut_in_half_is_an_error_naming_both_counts(tmp_path, capfd):
    cut_bytes(write_textured_avi(tmp_path / "train" / "cam.avi", 20, "MJPG"), 0.5)
    (video,) = open_dataset("folder", tmp_path).videos()
    with pytest.raises(DatasetError, match=r"cam\.avi: .*header says 20 frames, but (\d|1\d) decode") as err:
        video.validate()
    assert "truncated" in str(err.value)
    with pytest.raises(DatasetError, match=r"cam\.avi: "):
        video.read(0, 2)  # a block read checks the same
    assert capfd.readouterr().err == ""  # the decoder's own messages stay off the terminal


def test_video_file_whose_last_frame_is_cut_is_an_error(tmp_path, capfd):
    path = write_textured_avi(tmp_path / "train" / "cam.avi", 12)
    data = path.read_bytes()
    last = data.rfind(b"00dc", 0, data.rfind(b"idx1"))  # the last frame's chunk: '00dc', its size, its bytes
    size = int.from_bytes(data[last + 4 : last + 8], "little")
    cut_bytes(path, last + 8 + size // 2)  # the header still says 12 frames and 12 still "decode"
    (video,) = open_dataset("folder", tmp_path).videos()
    with pytest.raises(DatasetError, match=r"cam\.avi: its last frame does not decode cleanly.*12 frames.*12 decode"):
        video.validate()
    assert capfd.readouterr().err == ""


def test_video_file_whole_reads_quietly(tmp_path, capfd):
    path = write_textured_avi(tmp_path / "v.avi", 12)
    video = VideoFile(str(path))
    assert video.n_frames == 12 and video.read(0, 12).shape == (12, 48, 64, 3)
    assert capfd.readouterr().err == ""


def test_video_file_that_cannot_be_opened_is_one_error_without_decoder_noise(tmp_path, capfd):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # an MP4 whose index (moov) never came
    with pytest.raises(DatasetError, match=r"clip\.mp4: OpenCV cannot open this video file"):
        VideoFile.open(path)
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(not VTEST.is_dir(), reason=f"OpenCV sample video not found at {VTEST}")
def test_real_video_cut_in_half_names_795_and_399(tmp_path, capfd):
    cut = tmp_path / "vtest.avi"
    cut.write_bytes((VTEST / "vtest.avi").read_bytes())
    cut_bytes(cut, 0.5)
    with pytest.raises(DatasetError, match=r"vtest\.avi: .*header says 795 frames, but 399 decode"):
        VideoFile.open(cut)
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_precompute_of_a_truncated_video_is_one_error_line_and_writes_no_store(tmp_path):
    from tests.conftest import run_vad

    cut_bytes(write_textured_avi(tmp_path / "data" / "train" / "cam.avi", 20), 0.5)
    before = (tmp_path / "data" / "train" / "cam.avi").read_bytes()
    result = run_vad("precompute", "folder", "--data", str(tmp_path / "data"), "--store", str(tmp_path / "s.zarr"),
                     "--resolution", "32", "--scheduler", "inprocess", "--preset", "cpu")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "cam.avi" in lines[0], result.stderr
    assert "header says 20 frames" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "s.zarr").exists() and (tmp_path / "data" / "train" / "cam.avi").read_bytes() == before


def test_a_sample_of_a_video_file_is_read_in_one_pass_grabbing_or_seeking(tmp_path, monkeypatch):
    from tests.videos import decoded, write_video

    from mtvad.precompute.datasets import base

    rng = np.random.default_rng(0)
    path = write_video(tmp_path / "v.avi", rng.integers(0, 255, (30, 16, 24, 3), dtype=np.uint8), fps=10)
    frames = decoded(path)
    video = base.VideoFile.open(path)
    indices = [0, 2, 3, 11, 29]
    for max_grab in (base.MAX_GRAB_FORWARD, 3):  # grab forward over every gap; seek over gaps longer than 3
        monkeypatch.setattr(base, "MAX_GRAB_FORWARD", max_grab)
        assert np.array_equal(video.read_frames(indices), np.stack([frames[i] for i in indices]))
    with video.reader(5) as reader:
        assert np.array_equal(reader.read(3), np.stack(frames[5:8]))
        assert np.array_equal(reader.read(2), np.stack(frames[8:10]))
    with pytest.raises(ValueError, match="must increase"):
        video.read_frames([3, 3])
