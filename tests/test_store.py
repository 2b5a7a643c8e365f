"""The store contract: cache_schema.md == src/mtvad/store/schema.py == what the pipeline writes; opening refuses bad stores."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from mtvad.errors import StoreError
from mtvad.store.access import create_store, open_store
from mtvad.store.schema import ARRAYS, SCHEMA_VERSION, describe_build_change, fingerprint
from mtvad.store.summary import store_summary

ROOT = Path(__file__).resolve().parents[1]
BUILD = {"schema_version": SCHEMA_VERSION, "resolution": [8, 12], "chunk_frames": 4,
         "teachers": {"seg": {"name": "s", "version": "1", "params": {"k": 1}, "weights_sha256": None}}}


def documented_arrays() -> dict[str, dict[str, str]]:
    """The array table of cache_schema.md: name -> {dtype, shape, codecs, scale}."""
    text = (ROOT / "cache_schema.md").read_text()
    section = text.split("## Arrays of a video", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {"dtype": cells[1], "shape": cells[2], "codecs": cells[4], "scale": cells[5]}
    return rows


def test_cache_schema_documents_exactly_the_arrays_of_the_code():
    doc = documented_arrays()
    assert set(doc) == set(ARRAYS)
    for name, spec in ARRAYS.items():
        assert doc[name]["dtype"] == spec.dtype, name
        assert doc[name]["shape"] == "(" + ", ".join(spec.dims) + (",)" if len(spec.dims) == 1 else ")"), name
        assert doc[name]["codecs"] == spec.compression, name
        if spec.scale is None:
            assert doc[name]["scale"] == "-", name
        else:
            num, den = doc[name]["scale"].split("/")
            assert eval(num, {"pi": math.pi}) / float(den) == pytest.approx(spec.scale), name
    assert f"schema version {SCHEMA_VERSION}" in (ROOT / "cache_schema.md").read_text().splitlines()[0]


def test_quantisation_round_trips_within_half_a_step_and_wraps_angles():
    mag = np.array([0.0, 0.01, 1.234, 10.5, 5000.0], np.float32)
    back = ARRAYS["flow_mag"].decode(ARRAYS["flow_mag"].encode(mag))
    assert np.all(np.abs(back[:4] - mag[:4]) <= 1 / 128 + 1e-6)
    assert back[4] == pytest.approx(65535 / 64)  # saturates instead of wrapping
    ang = np.array([0.0, math.pi / 2, math.pi, 2 * math.pi - 1e-6, 2 * math.pi], np.float32)
    back = ARRAYS["flow_ang"].decode(ARRAYS["flow_ang"].encode(ang))
    assert np.allclose(back[:3], ang[:3], atol=math.pi / 256 + 1e-6)
    assert back[4] == 0.0  # 2*pi is angle 0
    depth = np.linspace(0, 1, 7, dtype=np.float32)
    assert np.allclose(ARRAYS["depth"].decode(ARRAYS["depth"].encode(depth)), depth, atol=1 / 131070 + 1e-7)


def make_store(path: Path, build=BUILD, **kw):
    store = create_store(path, dataset="toy", build=build, classes={0: "background", 1: "object"}, **kw)
    store.create_video("train", "01", n_frames=6, has_labels=False, has_masks=False)
    test = store.create_video("test", "01", n_frames=5, has_labels=True, has_masks=True)
    test.write_labels(np.array([0, 0, 1, 1, 0]))
    return store


def block_values(n: int) -> dict[str, np.ndarray]:
    """Every per-block array of n frames of a training video of `make_store`, zeros."""
    return {"frames": np.zeros((n, 8, 12, 3), np.uint8), "seg": np.ones((n, 8, 12), np.uint8),
            **{name: np.zeros((n, 8, 12), np.float32) for name in ("flow_mag", "flow_ang", "depth")}}


def test_written_block_reads_back_decoded_and_marked_done(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    video = store.video("train", "01")
    rng = np.random.default_rng(0)
    mag = rng.uniform(0.5, 3, (4, 8, 12)).astype(np.float32)
    mag[:, :2] = 0.05  # below the angle's noise floor (1/16 px): no direction
    seg = (rng.uniform(size=(4, 8, 12)) > 0.5).astype(np.uint8)
    values = {"frames": rng.integers(0, 255, (4, 8, 12, 3), dtype=np.uint8), "seg": seg, "flow_mag": mag,
              "flow_ang": np.full((4, 8, 12), 1.0, np.float32), "depth": np.zeros((4, 8, 12), np.float32)}
    video.write_block(0, values)
    assert video.blocks_done().tolist() == [1, 0]
    assert np.array_equal(video.frames(slice(0, 4)), values["frames"])
    assert np.allclose(video.flow_mag(slice(0, 4)), mag, atol=1 / 128)
    assert np.allclose(video.flow_mag(slice(0, 4), masked=True), video.flow_mag(slice(0, 4)) * seg)
    ang = video.flow_ang(slice(0, 4))
    assert np.all(ang[:, :2] == 0) and np.allclose(ang[:, 2:], 1.0, atol=math.pi / 256)
    assert store.video("test", "01").label().tolist() == [0, 0, 1, 1, 0]
    assert store.missing_blocks() == {"train/01": [1], "test/01": [0, 1]}
    with pytest.raises(StoreError, match="incomplete"):
        store.require_complete()


def test_reopening_with_the_same_build_resumes_and_another_build_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path).video("train", "01").write_block(1, block_values(2))
    again = create_store(path, dataset="toy", build=BUILD, classes={})
    assert again.video("train", "01").blocks_done().tolist() == [0, 1]  # kept
    other = json.loads(json.dumps(BUILD))
    other["teachers"]["seg"]["params"]["k"] = 2
    with pytest.raises(StoreError, match=r"seg teacher s v1 \{\"k\": 1\} -> s v1 \{\"k\": 2\}.*--overwrite"):
        create_store(path, dataset="toy", build=other, classes={})
    replaced = create_store(path, dataset="toy", build=other, classes={}, overwrite=True)
    assert replaced.fingerprint == fingerprint(other) and list(replaced.videos()) == []


def test_describe_build_change_names_the_resolution():
    changed = dict(BUILD, resolution=[16, 16])
    assert describe_build_change(BUILD, changed) == "resolution [8, 12] -> [16, 16]"


def test_create_video_refuses_a_changed_frame_count(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="train/01 has 6 frames in the store but 7 in the dataset"):
        store.create_video("train", "01", n_frames=7, has_labels=False, has_masks=False)


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no store at this path"),
    (lambda p: p.write_text("hello"), "a file, not a store"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "not a Zarr v3 store"),
    (lambda p: zarr.open_group(str(p), mode="w"), "not a vad store"),
])
def test_open_refuses_what_is_not_a_store(tmp_path, setup, message):
    path = tmp_path / "x.zarr"
    setup(path)
    with pytest.raises(StoreError, match=re.escape(str(path)) + ".*" + message):
        open_store(path)


def test_create_never_deletes_a_folder_that_is_not_a_store(tmp_path):
    path = tmp_path / "precious"
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="not a Zarr v3 store"):
        make_store(path, overwrite=True)
    assert (path / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("version, word", [(SCHEMA_VERSION + 1, "newer"), (SCHEMA_VERSION - 1, "older")])
def test_open_refuses_another_schema_version(tmp_path, version, word):
    path = tmp_path / "s.zarr"
    make_store(path).root.attrs["schema_version"] = version
    with pytest.raises(StoreError, match=f"schema version {version}.*reads version {SCHEMA_VERSION} \\({word}"):
        open_store(path)


def test_open_names_a_missing_or_malformed_array(tmp_path):
    path = tmp_path / "s.zarr"
    store = make_store(path)
    del store.root["test/01/depth"]
    with pytest.raises(StoreError, match="video test/01 lacks array 'depth'"):
        open_store(path)
    store.root["test/01"].create_array("depth", shape=(5, 8, 12), dtype="float32")
    with pytest.raises(StoreError, match=r"test/01/depth is float32\(5, 8, 12\), the contract says uint16\(5, 8, 12\)"):
        open_store(path)


def test_summary_counts_videos_frames_and_bytes(tmp_path):
    summary = store_summary(make_store(tmp_path / "s.zarr"))
    assert summary["videos"] == {"train": 1, "test": 1} and summary["frames"] == {"train": 6, "test": 5}
    assert summary["arrays"]["frames"]["raw"] == (6 + 5) * 8 * 12 * 3
    assert summary["arrays"]["label"]["videos"] == 1 and "label" in summary["arrays"]
    assert summary["missing_blocks"] == 4
