"""Sharing stores: pack/unpack (.zip read in place), remote S3 stores (moto on loopback), verify by checksum,
refusing stores that carry code, provenance and diff."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.errors import StoreError
from mtvad.store.access import create_store, open_store
from mtvad.store.diff import diff_stores
from mtvad.store.pack import pack_store, unpack_store
from mtvad.store.schema import CHECKSUMMED, digest
from mtvad.store.verify import verify_store
from tests.conftest import write_moving_ucsd
from tests.stores import make_store, store_arrays

runner = CliRunner()


def vad(*args: str):
    return runner.invoke(app, list(args))


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A complete random store: 2 training videos (6, 7 frames), 1 test video, 3 classes, chunks of 4."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.zarr"
    make_store(path, n_train=2, n_frames=[6, 7], resolution=(32, 32), n_classes=3, chunk_frames=4)
    return path


@pytest.fixture(scope="module")
def packed(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "tiny.zip"
    pack_store(tiny, out)
    return out


# ------------------------------------------------------------------------------------------- pack / unpack


def test_a_packed_store_reads_every_array_like_the_folder(tiny, packed):
    with zipfile.ZipFile(packed) as zf:
        infos = zf.infolist()
    assert infos[0].filename == "zarr.json"
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}  # chunks are zstd already
    assert {i.filename for i in infos} == set(files_of(tiny))
    expected, actual = store_arrays(tiny), store_arrays(packed)
    assert expected.keys() == actual.keys() and len(expected) == 3 * 7 + 1
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key
    store = open_store(packed)
    assert store.fingerprint == open_store(tiny).fingerprint and not store.missing_blocks()


@pytest.mark.slow
def test_training_from_the_zip_gives_the_loss_curve_of_the_folder(tiny, packed, tmp_path, one_thread):
    from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig
    from mtvad.students.branches import branch_spec
    from mtvad.students.data import StreamingDataset
    from mtvad.students.train import train

    def config(store) -> TrainConfig:
        return TrainConfig(branch="appearance", data=DataConfig(store=str(store), in_memory=True),
                           optim=OptimConfig(batch_size=2, epochs=3),
                           run=RunConfig(out=str(tmp_path / Path(store).name), checkpoint_every=1000, max_steps=3,
                                         seed=0, device="cpu"))

    from_dir = train(config(tiny), progress=False)["appearance"].losses
    from_zip = train(config(packed), progress=False)["appearance"].losses
    assert len(from_dir) == 3 and from_dir == from_zip
    # streaming mode (each loader worker opens the store itself) reads the same samples from the zip
    for branch in ("appearance", "motion"):
        streams = []
        for store in (tiny, packed):
            opened = open_store(store)
            spec = branch_spec(branch, config(store), opened.resolution)
            streams.append(StreamingDataset(opened, "train", ["01", "02"], spec, n_classes=3))
        assert len(streams[0]) == len(streams[1]) > 0
        for i in range(len(streams[0])):
            a, b = streams[0][i], streams[1][i]
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), (branch, i)


def test_packing_is_deterministic_and_unpacking_restores_the_folder(tiny, packed, tmp_path):
    again = tmp_path / "again.zip"
    pack_store(tiny, again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(packed.read_bytes()).digest()
    out = tmp_path / "restored.zarr"
    unpack_store(packed, out)
    assert files_of(out) == files_of(tiny)
    assert not list(tmp_path.glob(".*unpack*"))  # no temporary folder left behind
    with pytest.raises(StoreError, match="not an empty folder"):
        unpack_store(packed, out)
    empty = tmp_path / "empty"
    empty.mkdir()
    unpack_store(packed, empty)  # an existing empty folder is fine
    assert open_store(empty).fingerprint == open_store(tiny).fingerprint


def test_pack_refuses_an_existing_file_an_incomplete_store_and_writing_into_a_zip(tiny, packed, tmp_path):
    with pytest.raises(StoreError, match="already exists.*--overwrite"):
        pack_store(tiny, packed)
    with pytest.raises(StoreError, match=r"must end in \.zip"):
        pack_store(tiny, tmp_path / "x.tar")
    partial = make_store(tmp_path / "partial.zarr", n_train=1, n_test=0, complete=False).url
    with pytest.raises(StoreError, match="incomplete.*--allow-incomplete"):
        pack_store(partial, tmp_path / "partial.zip")
    pack_store(partial, tmp_path / "partial.zip", allow_incomplete=True)
    assert open_store(tmp_path / "partial.zip").missing_blocks() == {"train/01": [2]}
    with pytest.raises(StoreError, match="read-only.*unpack"):
        open_store(packed, mode="r+")
    with pytest.raises(StoreError, match="read-only"):
        create_store(tmp_path / "new.zip", dataset="x", build={}, classes={})
    (tmp_path / "notes.zip").write_bytes(b"not a zip")
    with pytest.raises(StoreError, match="not a readable zip file"):
        open_store(tmp_path / "notes.zip")


def evil_zip(path: Path, tiny: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files_of(tiny).items():
            zf.writestr(rel, data)
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd" if symlink else "owned")
    return path


@pytest.mark.parametrize("name, symlink", [("../evil.txt", False), ("train/../../evil.txt", False),
                                           ("/tmp/evil.txt", False), ("train/01/link", True)])
def test_unpack_refuses_entries_that_land_outside_the_folder(tiny, tmp_path, name, symlink):
    bad = evil_zip(tmp_path / "bad.zip", tiny, name, symlink)
    out = tmp_path / "sub" / "out.zarr"
    with pytest.raises(StoreError, match=f"entry '{name}' would land outside the target folder.*nothing was written"):
        unpack_store(bad, out)
    assert not out.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()


# -------------------------------------------------------------------------------------------------- verify


def test_verify_finds_corrupted_and_missing_chunks_by_video_array_and_frames(tiny, tmp_path):
    import shutil

    path = tmp_path / "damaged.zarr"
    shutil.copytree(tiny, path)
    assert verify_store(path).ok
    chunk = path / "train/01/frames/c/1/0/0/0"  # frames 4-5 of train/01
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (path / "train/02/depth/c/0/0/0").unlink()  # frames 0-3 of train/02
    store = open_store(path, mode="r+")
    store.video("test", "01").group["flow_mag"][4:6] = 5  # silently rewritten: decodes fine, crc differs
    (path / "test/01/label/c/0").unlink()

    report = verify_store(path)
    found = {(p.video, p.array, p.frames): p.kind for p in report.problems}
    assert found.pop(("train/01", "frames", (4, 6))) in ("corrupted", "undecodable")
    assert found.pop(("train/02", "depth", (0, 4))) == "missing"
    assert found.pop(("test/01", "flow_mag", (4, 6))) == "corrupted"
    assert found.pop(("test/01", "label", (0, 6))) == "missing"
    assert found == {} and not report.ok
    result = vad("store", "verify", str(path))
    assert result.exit_code == 3  # damaged (1: could not run)
    assert "train/02/depth [frames 0-3]: missing" in result.output
    assert "test/01/flow_mag [frames 4-5]: corrupted (crc32" in result.output
    assert "4 problems" in result.output
    ok = vad("store", "verify", str(tiny))
    assert ok.exit_code == 0 and "match their checksums" in ok.output


def test_verify_finds_a_damaged_entry_of_a_packed_store(packed, tmp_path):
    with zipfile.ZipFile(packed) as zf:
        info = zf.getinfo("train/02/seg/c/1/0/0")
    raw = bytearray(packed.read_bytes())
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[offset + info.file_size // 2] ^= 0x01
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    [problem] = verify_store(damaged).problems
    assert (problem.video, problem.array, problem.frames, problem.kind) == ("train/02", "seg", (4, 7), "undecodable")
    assert "CRC" in problem.detail


def test_checksums_are_recorded_per_block_as_the_crc32_of_the_stored_values(tiny):
    video = open_store(tiny).video("train", "02")
    checksums = video.group["checksums"]
    assert checksums.attrs["columns"] == list(CHECKSUMMED) and checksums.chunks == (1, len(CHECKSUMMED))
    assert checksums[1, 0] == digest(video.group["frames"][4:7])
    assert checksums[1, CHECKSUMMED.index("mask")] == 0  # no mask in this video


# ------------------------------------------------------------------------------------------ data, not code


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["codecs"].insert(1, {"name": "numcodecs.pickle", "configuration": {"protocol": 5}}),
     "codec 'numcodecs.pickle' is refused"),
    (lambda m: m["codecs"].append({"name": "evil.module.codec"}), "codec 'evil.module.codec' is refused"),
    (lambda m: m.update(codecs=[{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, 32, 32], "codecs": [{"name": "bytes"}, {"name": "numcodecs.pickle"}],
        "index_codecs": [{"name": "bytes"}]}}]), "codec 'numcodecs.pickle' is refused"),
    (lambda m: m.update(data_type="object"), 'data type "object" is refused'),
    (lambda m: m.update(data_type="string"), 'data type "string" is refused'),
    (lambda m: m.update(storage_transformers=[{"name": "anything"}]), "storage transformers"),
])
def test_a_store_that_carries_code_is_refused_before_anything_is_decoded(tiny, tmp_path, monkeypatch, edit,
                                                                          message):
    import pickle
    import shutil

    path = tmp_path / "evil.zarr"
    shutil.copytree(tiny, path)
    meta_file = path / "train/02/seg/zarr.json"
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(StoreError, match=f"evil.zarr: train/02/seg: {message}.*data, never code"):
        open_store(path)
    store = open_store(path, validate=False)  # what training opens: refused at the first access to the video
    store.video("train", "01")
    with pytest.raises(StoreError, match=message):
        store.video("train", "02")
    bad_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        for rel, data in files_of(path).items():
            zf.writestr(rel, data)
    with pytest.raises(StoreError, match=message):
        unpack_store(bad_zip, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checkpoints_load_with_weights_only():
    root = Path(__file__).resolve().parents[1]
    calls = [line for p in (root / "src" / "mtvad").rglob("*.py") for line in p.read_text().splitlines()
             if "torch.load(" in line]
    assert calls and all("weights_only=True" in c for c in calls), calls


# --------------------------------------------------------------------------------------- diff, provenance


def test_diff_says_whether_two_stores_are_interchangeable(tiny, packed, tmp_path):
    same = diff_stores(tiny, packed)
    assert same["interchangeable"] and same["contents"]["identical"] and same["reasons"] == []
    teachers = {role: {"name": "random", "version": "1", "params": {"k": 2} if role == "flow" else {},
                       "weights_sha256": None} for role in ("seg", "flow", "depth")}
    other = make_store(tmp_path / "other.zarr", n_train=3, n_frames=[6, 8, 5], resolution=(32, 32),
                              n_classes=3, chunk_frames=4, teachers=teachers).url
    d = diff_stores(tiny, other)
    assert not d["interchangeable"]
    assert d["videos"]["only_b"] == ["train/03"] and d["videos"]["frame_counts"] == [
        {"video": "train/02", "a": 7, "b": 8}]
    assert "fingerprint differs" in d["reasons"]
    params = next(f for f in d["fields"] if f["field"] == "flow params")
    assert params == {"field": "flow params", "a": {"k": None}, "b": {"k": 2}, "same": False}
    result = vad("store", "diff", str(tiny), str(other))
    assert result.exit_code == 3, result.output  # different (1: could not run)
    for text in ("NOT interchangeable", "fingerprint differs", "train/03", "train/02: 7 vs 8 frames", "flow params"):
        assert text in result.output, text
    ok = vad("store", "diff", str(tiny), str(packed))
    assert ok.exit_code == 0 and "interchangeable" in ok.output and "identical contents" in ok.output


# ------------------------------------------------------------------------------------------- remote: S3


@pytest.fixture(scope="module")
def s3():
    """A real S3-protocol server (moto) on 127.0.0.1, reached by s3fs through the standard AWS variables."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "VAD_STORAGE_OPTIONS"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "team")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("bucket")
        yield endpoint
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.mark.slow
def test_precompute_to_s3_then_info_verify_read_train_pack_and_diff_from_it(s3, tmp_path, one_thread):
    from mtvad.precompute.datasets import open_dataset
    from mtvad.precompute.jobs import precompute
    from mtvad.precompute.teachers import resolve_preset

    data = write_moving_ucsd(tmp_path / "ped2", n_train=2, n_test=1, n_frames=8, size=(32, 32))
    settings = dict(scheduler="inprocess", resolution=(32, 32), chunk_frames=4, progress=False)
    url = "s3://bucket/ped2.zarr"
    precompute(open_dataset("ped2", data), url, resolve_preset("cpu"), **settings)
    local = tmp_path / "local.zarr"
    precompute(open_dataset("ped2", data), str(local), resolve_preset("cpu"), **settings)

    store = open_store(url)
    store.require_complete()
    assert [v.key for v in store.videos()] == ["train/01", "train/02", "test/01"]
    remote, here = store_arrays(url), store_arrays(local)
    assert remote.keys() == here.keys()
    for key in here:
        assert np.array_equal(remote[key], here[key]), key
    assert verify_store(url).ok
    d = diff_stores(url, local)
    assert d["interchangeable"] and d["contents"]["identical"], d["reasons"]

    info = vad("store", "info", url)
    assert info.exit_code == 0, info.output
    attrs = store.attrs
    for text in ("s3://bucket/ped2.zarr", "train 2 (16 frames)", "farneback", attrs["built_by"],
                 f"pipeline {attrs['pipeline_version']}", str(data)):
        assert text in info.output, text
    assert "@" in attrs["built_by"]

    from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig
    from mtvad.students.train import train

    cfg = TrainConfig(branch="appearance", data=DataConfig(store=url), optim=OptimConfig(batch_size=2, epochs=1),
                      run=RunConfig(out=str(tmp_path / "run"), max_steps=2, device="cpu"))
    assert len(train(cfg, progress=False)["appearance"].losses) == 2

    packed = tmp_path / "ped2.zip"
    result = vad("store", "pack", url, str(packed))
    assert result.exit_code == 0, result.output
    assert diff_stores(packed, local)["interchangeable"]


@pytest.mark.slow
def test_remote_options_come_from_the_environment(s3, monkeypatch, tmp_path):
    import s3fs

    make_store(tmp_path / "s.zarr", n_train=1, n_test=0)
    s3fs.S3FileSystem().put(str(tmp_path / "s.zarr"), "bucket/copied.zarr", recursive=True)
    assert verify_store("s3://bucket/copied.zarr").ok
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    for env in ({"AWS_ENDPOINT_URL": s3}, {"VAD_STORAGE_OPTIONS": json.dumps({"endpoint_url": s3})}):
        s3fs.S3FileSystem.clear_instance_cache()
        with monkeypatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            assert open_store("s3://bucket/copied.zarr").video_ids("train") == ["01"], env
    monkeypatch.setenv("VAD_STORAGE_OPTIONS", "{not json")
    with pytest.raises(StoreError, match="VAD_STORAGE_OPTIONS is not valid JSON"):
        open_store("s3://bucket/copied.zarr")
    unreachable = {"endpoint_url": "http://127.0.0.1:1", "config_kwargs": {"retries": {"max_attempts": 1}}}
    monkeypatch.setenv("VAD_STORAGE_OPTIONS", json.dumps(unreachable))
    result = vad("store", "info", "s3://bucket/copied.zarr")  # one line, no traceback
    assert result.exit_code == 1 and "cannot reach the store" in result.output
    assert "AWS_ENDPOINT_URL_S3" in result.output and "Traceback" not in result.output
