"""The paper's teachers (Mask R-CNN on COCO, MiDaS DPT-Hybrid): their real loading and inference code, run on
the real architectures with random weights (no weights can be downloaded here); weights found in the
frameworks' caches without network; a clear error, before any store is written, where there are none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mtvad.errors import TeacherError  # noqa: E402
from mtvad.precompute import teachers as registry  # noqa: E402
from mtvad.precompute.datasets import open_dataset  # noqa: E402
from mtvad.precompute.jobs import precompute  # noqa: E402
from mtvad.precompute.teachers import build_teacher, resolve_preset  # noqa: E402
from mtvad.precompute.teachers import weights as W  # noqa: E402
from mtvad.precompute.teachers.base import file_sha256  # noqa: E402
from mtvad.precompute.teachers.maskrcnn import coco_classes, semantic_map  # noqa: E402
from mtvad.precompute.teachers.midas import normalise  # noqa: E402
from mtvad.store.access import open_store  # noqa: E402
from tests.conftest import write_moving_ucsd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# small enough for CPU: torchvision's internal resize to 64 px, 3 detections per frame; random weights give
# arbitrary scores, so the score threshold is 0 for something to be painted whatever they are
MRCNN_SMALL = {"min_size": 64, "max_size": 64, "max_detections": 3, "score_threshold": 0.0}


@pytest.fixture(scope="module")
def maskrcnn_file(tmp_path_factory) -> Path:
    """A randomly initialised maskrcnn_resnet50_fpn state dict (~170 MB), saved once for the module."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("maskrcnn") / "random-maskrcnn.pth"
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def dpt_folder(tmp_path_factory) -> Path:
    """A tiny DPT *hybrid* (BiT backbone + ViT) depth model, random weights, as a Hugging Face model folder
    (the configuration of transformers' own DPT-hybrid tests)."""
    from transformers import DPTConfig, DPTForDepthEstimation

    backbone = {"global_padding": "same", "layer_type": "bottleneck", "depths": [3, 4, 9],
                "out_features": ["stage1", "stage2", "stage3"], "embedding_dynamic_padding": True,
                "hidden_sizes": [16, 16, 32, 32], "num_groups": 2}
    config = DPTConfig(image_size=32, patch_size=16, hidden_size=32, fusion_hidden_size=32, num_hidden_layers=4,
                       backbone_out_indices=[0, 1, 2, 3], num_attention_heads=4, intermediate_size=37,
                       is_hybrid=True, backbone_config=backbone, backbone_featmap_shape=[1, 32, 24, 24],
                       neck_hidden_sizes=[16, 16, 32, 32])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dpt") / "tiny-dpt-hybrid"
    DPTForDepthEstimation(config).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here touches the network or the user's caches: empty caches, every download raises."""
    calls: list[str] = []

    def refuse(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise OSError("network is unreachable (test)")
        return fail

    import huggingface_hub

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("load_state_dict_from_url"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("download_url_to_file"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse("snapshot_download"))
    monkeypatch.setattr(huggingface_hub, "model_info", refuse("model_info"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", W.OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(registry, "_LOADED", {})
    return calls


def rgb_frames(n=3, size=(32, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def test_paper_teachers_run_through_the_pipeline_into_a_store(maskrcnn_file, dpt_folder, tmp_path):
    data = write_moving_ucsd(tmp_path / "ped2", n_train=1, n_test=1, n_frames=4)
    specs = {"seg": ("maskrcnn", {**MRCNN_SMALL, "weights": str(maskrcnn_file)}),
             "flow": ("farneback", {}),
             "depth": ("midas", {"weights": str(dpt_folder), "batch_size": 3})}
    path = tmp_path / "paper.zarr"
    result = precompute(open_dataset("ped2", data), str(path), specs, scheduler="inprocess", resolution=(32, 40),
                        chunk_frames=2, progress=False)
    assert result.frames_run == 8 and result.blocks_run == 4

    store = open_store(path)
    store.require_complete()
    vocabulary = coco_classes()
    assert store.classes == vocabulary
    painted = 0
    for video in store.videos():
        seg = video.group["seg"][:]
        assert seg.dtype == np.uint8 and seg.shape == (4, 32, 40)
        assert set(np.unique(seg).tolist()) <= set(vocabulary)
        painted += int((seg > 0).sum())
        depth = video.depth()
        assert depth.dtype == np.float32 and depth.shape == (4, 32, 40)
        assert depth.min() >= 0 and depth.max() <= 1
        assert np.allclose(depth.min(axis=(1, 2)), 0) and np.allclose(depth.max(axis=(1, 2)), 1)  # per frame
        assert video.flow_mag().shape == (4, 32, 40)
    assert painted > 0  # random weights at score threshold 0 still paint something

    teachers = store.root.attrs["teachers"]
    assert teachers["seg"]["weights_sha256"] == file_sha256(maskrcnn_file)
    assert teachers["depth"]["weights_sha256"] == file_sha256(dpt_folder / "model.safetensors")
    assert teachers["flow"]["weights_sha256"] is None
    defaults = {k: v for k, v in vars(build_teacher("maskrcnn").params).items() if k != "weights"}
    assert teachers["seg"]["params"] == {**defaults, **MRCNN_SMALL}
    assert "weights" not in teachers["seg"]["params"] and "weights" not in teachers["depth"]["params"]


def test_the_fingerprint_follows_the_weights_content_not_their_location(dpt_folder, tmp_path):
    moved = shutil.copytree(dpt_folder, tmp_path / "elsewhere")
    a = build_teacher("midas", {"weights": str(dpt_folder)}).describe()
    assert build_teacher("midas", {"weights": str(moved)}).describe() == a
    with open(moved / "model.safetensors", "r+b") as fh:  # one byte of the weights changes
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    b = build_teacher("midas", {"weights": str(moved)}).describe()
    assert b["weights_sha256"] != a["weights_sha256"] and b["params"] == a["params"]


def test_weights_in_the_framework_caches_are_found_without_network(maskrcnn_file, dpt_folder, tmp_path, offline):
    # torch hub: $TORCH_HOME/hub/checkpoints/<file>
    checkpoint = tmp_path / "torch-home" / "hub" / "checkpoints" / W.MASKRCNN_FILE
    checkpoint.parent.mkdir(parents=True)
    checkpoint.symlink_to(maskrcnn_file)
    # Hugging Face hub cache: $HF_HOME/hub/models--Intel--dpt-hybrid-midas/{refs/main, snapshots/<commit>/}
    repo = tmp_path / "hf-home" / "hub" / "models--Intel--dpt-hybrid-midas"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(dpt_folder, repo / "snapshots" / "0123abcd")

    seg = build_teacher("maskrcnn", MRCNN_SMALL)
    assert seg.weights_path() == checkpoint
    assert seg.describe()["weights_sha256"] == file_sha256(maskrcnn_file)
    out = seg(rgb_frames(3), 1)["seg"]
    assert out.shape == (2, 32, 40) and out.dtype == np.uint8

    depth = build_teacher("midas")
    assert depth.weights_path() == repo / "snapshots" / "0123abcd" / "model.safetensors"
    out = depth(rgb_frames(3), 0)["depth"]
    assert out.shape == (3, 32, 40) and out.dtype == np.float32
    assert offline == []  # nothing tried the network

    from typer.testing import CliRunner

    from mtvad.cli.precompute import app

    listing = CliRunner().invoke(app, ["teachers"], env={"COLUMNS": "400"})
    assert listing.exit_code == 0, listing.output
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if line.count("│") > 3}
    assert "found" in rows["maskrcnn"] and str(checkpoint) in rows["maskrcnn"]
    assert "found" in rows["midas"] and "0123abcd" in rows["midas"]
    assert "none needed" in rows["farneback"]
    assert "preset paper: seg=maskrcnn, flow=farneback, depth=midas" in listing.output


def test_without_weights_the_error_names_the_file_the_url_and_the_destination(tmp_path, offline):
    checkpoint = tmp_path / "torch-home" / "hub" / "checkpoints" / W.MASKRCNN_FILE
    with pytest.raises(TeacherError) as err:
        build_teacher("maskrcnn").describe()
    message = str(err.value)
    assert W.MASKRCNN_FILE in message and W.MASKRCNN_URL in message and f"put it at {checkpoint}" in message
    assert "network is unreachable (test)" in message  # why the download did not work
    assert "download_url_to_file" in offline

    cache = tmp_path / "hf-home" / "hub"
    with pytest.raises(TeacherError) as err:
        build_teacher("midas").describe()
    message = str(err.value)
    assert "Intel/dpt-hybrid-midas" in message and "https://huggingface.co/Intel/dpt-hybrid-midas" in message
    assert str(cache / "models--Intel--dpt-hybrid-midas") in message and "network is unreachable (test)" in message

    with pytest.raises(TeacherError, match="weights='/nowhere/m.pth' is not a file"):
        build_teacher("maskrcnn", {"weights": "/nowhere/m.pth"}).describe()
    with pytest.raises(TeacherError, match="is not a Hugging Face model folder"):
        build_teacher("midas", {"weights": str(tmp_path)}).describe()

    # the precompute job describes its teachers before it writes anything
    data = write_moving_ucsd(tmp_path / "ped2", n_train=1, n_test=1, n_frames=4)
    with pytest.raises(TeacherError, match="weights not found"):
        precompute(open_dataset("ped2", data), str(tmp_path / "s.zarr"), resolve_preset("paper"),
                   scheduler="inprocess", resolution=(32, 32), progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_where_there_is_internet_missing_weights_are_downloaded_into_the_caches(maskrcnn_file, dpt_folder, tmp_path,
                                                                               monkeypatch):
    import huggingface_hub

    fetched = []

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, hash_prefix))
        shutil.copyfile(maskrcnn_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    checkpoint = tmp_path / "torch-home" / "hub" / "checkpoints" / W.MASKRCNN_FILE
    assert build_teacher("maskrcnn").weights_path() == checkpoint and checkpoint.is_file()
    assert fetched == [(W.MASKRCNN_URL, "bf2d0c1e")]  # torch hub checks the hash in the file name

    class Info:
        siblings = [type("S", (), {"rfilename": n})() for n in
                    ("config.json", "model.safetensors", "pytorch_model.bin", "README.md")]

    def snapshot_download(model_id, *, cache_dir, allow_patterns, **kw):
        fetched.append((model_id, sorted(allow_patterns)))
        folder = Path(cache_dir) / "models--Intel--dpt-hybrid-midas" / "snapshots" / "c0ffee"
        shutil.copytree(dpt_folder, folder)
        (folder.parents[1] / "refs").mkdir()
        (folder.parents[1] / "refs" / "main").write_text("c0ffee")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "model_info", lambda model_id, **kw: Info())
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    cache = tmp_path / "hf-home" / "hub"
    weights = cache / "models--Intel--dpt-hybrid-midas" / "snapshots" / "c0ffee" / "model.safetensors"
    assert build_teacher("midas").weights_path() == weights
    assert fetched[1] == ("Intel/dpt-hybrid-midas", ["config.json", "model.safetensors"])  # one weights file
    assert build_teacher("midas").weights_path() == weights and len(fetched) == 2  # found in the cache now

    monkeypatch.setenv(W.OFFLINE_ENV, "1")  # downloads can be forbidden
    checkpoint.unlink()
    with pytest.raises(TeacherError, match=f"downloads are disabled \\({W.OFFLINE_ENV}=1\\)"):
        build_teacher("maskrcnn").weights_path()
    assert len(fetched) == 2


@pytest.mark.slow
def test_precompute_with_the_paper_preset_exits_1_with_the_message_and_writes_no_store(tmp_path):
    data = write_moving_ucsd(tmp_path / "ped2", n_train=1, n_test=1, n_frames=4)
    store = tmp_path / "paper.zarr"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
           W.OFFLINE_ENV: "1", "COLUMNS": "1000"}  # no download even where there is internet
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "mtvad", "precompute", "ped2", "--data", str(data), "--store",
                           str(store), "--preset", "paper", "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    output = " ".join((proc.stdout + proc.stderr).split())  # rich may wrap the line
    assert proc.returncode == 1, output
    assert "error:" in output and "Traceback" not in output
    assert "weights not found" in output and f"{W.OFFLINE_ENV}=1" in output
    assert "https://huggingface.co/Intel/dpt-hybrid-midas" in output or W.MASKRCNN_URL in output
    assert not store.exists()


def test_semantic_map_paints_higher_scores_over_lower_and_drops_weak_or_unknown_instances():
    h, w = 6, 8
    masks = np.full((5, 1, h, w), 0.2, np.float32)
    masks[0, 0, :, 3:] = 0.8  # car (3), score 0.7: columns 3..7
    masks[1, 0, :, :5] = 0.6  # person (1), score 0.9: columns 0..4, over the car at 3..4
    masks[1, 0, 5, :] = 0.5  # ... but not its last row, where it is exactly at the mask threshold
    masks[2, 0, :2, :] = 0.9  # dog (18), score 0.3: below the score threshold, never painted
    masks[3, 0, 2:4, :] = 0.9  # id 12 is a COCO placeholder ("N/A"), score 0.95: not in the vocabulary
    masks[4, 0, 4:, :] = 0.9  # bicycle (2) at exactly the score threshold: not above it
    labels = np.array([3, 1, 18, 12, 2])
    scores = np.array([0.7, 0.9, 0.3, 0.95, 0.5])
    valid = torch.zeros(256, dtype=torch.bool)
    valid[list(coco_classes())[1:]] = True
    seg = semantic_map(torch.from_numpy(masks), labels, scores, (h, w), 0.5, 0.5, valid).numpy()
    expected = np.zeros((h, w), np.uint8)
    expected[:, 3:] = 3
    expected[:5, :5] = 1
    assert seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, expected)
    # the input order does not matter, only the scores do
    order = [4, 3, 2, 1, 0]
    again = semantic_map(torch.from_numpy(masks[order, 0]), labels[order], scores[order], (h, w), 0.5, 0.5, valid)
    np.testing.assert_array_equal(again.numpy(), expected)
    # nothing detected: all background
    empty = semantic_map(torch.zeros((0, 1, h, w)), np.zeros(0, int), np.zeros(0), (h, w), 0.5, 0.5, valid)
    assert empty.shape == (h, w) and not empty.numpy().any()


def test_the_vocabulary_is_coco_with_coco_ids():
    classes = coco_classes()
    assert len(classes) == 81 and classes[0] == "background"
    assert classes[1] == "person" and classes[2] == "bicycle" and classes[3] == "car" and classes[90] == "toothbrush"
    assert 12 not in classes and 83 not in classes and "N/A" not in classes.values()
    assert build_teacher("maskrcnn").classes == classes and max(classes) < 256


def test_midas_preprocessing_is_dpt_image_processors_and_depth_is_normalised_per_frame(dpt_folder, tmp_path):
    from transformers import DPTImageProcessor

    teacher = build_teacher("midas", {"weights": str(dpt_folder)})
    teacher.load()
    assert teacher.device.type == ("cuda" if torch.cuda.is_available() else "cpu") and teacher.input_size == (32, 32)
    frames = rgb_frames(2, size=(48, 64))
    reference = DPTImageProcessor(size={"height": 32, "width": 32})(images=list(frames), return_tensors="pt")
    ours = teacher.preprocess(frames).cpu()
    assert ours.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, reference["pixel_values"], atol=1e-5, rtol=0)

    from transformers import DPTImageProcessor as Processor

    for name, resample in (("bicubic", 3), ("bilinear", 2)):  # the checkpoint's own preprocessor config
        folder = shutil.copytree(dpt_folder, tmp_path / name)
        Processor(size={"height": 32, "width": 32}, resample=resample).save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_teacher("midas", {"weights": str(tmp_path / "bicubic")}).load()  # the processor's defaults: no warning
    with pytest.warns(UserWarning, match="preprocesses differently: resample 2"):
        build_teacher("midas", {"weights": str(tmp_path / "bilinear")}).load()

    depth = torch.stack([torch.arange(12.0).reshape(3, 4) * 3 + 5, torch.full((3, 4), 7.0)])
    out = normalise(depth, (6, 8))
    assert out.shape == (2, 6, 8) and out.dtype == torch.float32
    assert out[0].min() == 0 and out[0].max() == 1 and not out[1].any()  # a constant map becomes 0
    # the model's outputs go through the same steps; half precision changes nothing on a CPU
    if not torch.cuda.is_available():
        half = build_teacher("midas", {"weights": str(dpt_folder), "half": True})
        np.testing.assert_array_equal(half(frames, 0)["depth"], teacher(frames, 0)["depth"])


def test_the_paper_preset_and_the_teachers_declare_what_they_need():
    assert resolve_preset("paper") == {"seg": ("maskrcnn", {}), "flow": ("farneback", {}), "depth": ("midas", {})}
    for name in ("maskrcnn", "midas"):
        teacher = build_teacher(name)
        assert teacher.needs_gpu and teacher.context == 0 and teacher.fit_frames == 0
        assert teacher.params.half is False
    params = json.loads(json.dumps(build_teacher("maskrcnn").params.__dict__))
    assert params["score_threshold"] == 0.5 and params["mask_threshold"] == 0.5 and params["min_size"] == 800
    with pytest.raises(TeacherError, match=r"no parameter\(s\) \['score'\]"):
        build_teacher("maskrcnn", {"score": 0.3})
    with pytest.raises(TeacherError, match="produces 'depth', not 'seg'"):
        build_teacher("midas", role="seg")


def test_each_gpu_worker_of_a_local_cluster_takes_its_own_gpu(monkeypatch):
    import distributed

    assert W.pick_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert W.pick_device() == torch.device("cuda")  # not in a Dask worker
    for name, index in ((0, 0), (1, 1), (2, 0)):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: type("Worker", (), {"name": name})())
        assert W.pick_device() == torch.device("cuda", index)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # dask-cuda: one visible GPU per worker
    assert W.pick_device() == torch.device("cuda")
