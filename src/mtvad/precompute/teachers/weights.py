"""Where the paper's teachers find their weights: an explicit path, the framework's cache, a download.

Both weight-loading teachers resolve their weights in the same order, without loading them:

1. the teacher parameter `weights` (a file for Mask R-CNN, a Hugging Face model folder for MiDaS), which
   must exist when it is given (no fallback: a typo is an error, not a silent download);
2. the framework's own cache, located from the environment at call time exactly as the framework does:
   torch hub's `$TORCH_HOME/hub/checkpoints/` (`torch.hub.get_dir()`, default `~/.cache/torch/hub`) and
   Hugging Face's hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, default `~/.cache/huggingface/hub`);
3. a download into that cache, where the machine has internet, unless `PIPELINE_OFFLINE=1` (or, for
   Hugging Face, `HF_HUB_OFFLINE=1`) says not to try.

Where none works, `TeacherError` says which file is missing, where to get it and where to put it. A file
that is present is found without any network access. `pick_device` is where both teachers put their model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mtvad.errors import TeacherError
from mtvad.hashing import file_sha256

OFFLINE_ENV = "PIPELINE_OFFLINE"

MASKRCNN_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
MASKRCNN_URL = f"https://download.pytorch.org/models/{MASKRCNN_FILE}"

MIDAS_MODEL_ID = "Intel/dpt-hybrid-midas"
MIDAS_URL = f"https://huggingface.co/{MIDAS_MODEL_ID}"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
HF_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Located:
    """Where a teacher's weights are (`path`, None if not found) or would be expected (`expected`)."""

    path: Path | None
    expected: str
    source: str = ""  # "parameter", "cache" or "download"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def downloads_disabled(*extra_env: str) -> str | None:
    """The environment variable that forbids downloads, if one is set."""
    for name in (OFFLINE_ENV, *extra_env):
        if _truthy(name):
            return name
    return None


# ----------------------------------------------------------------------------------------------- device


def pick_device():
    """The torch device a teacher's model runs on in this process: a GPU where there is one, else the CPU.

    With several visible GPUs, a worker of a Dask LocalCluster (workers named 0, 1, ...) takes GPU
    `name % count`, so that the cluster's one-worker-per-GPU layout spreads the models over the GPUs; a
    worker started with CUDA_VISIBLE_DEVICES set to one GPU (dask-cuda) sees one GPU and takes it.
    """
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count > 1:
        try:
            from distributed import get_worker

            name = get_worker().name
        except (ImportError, ValueError):  # not in a Dask worker
            name = None
        if isinstance(name, int):
            return torch.device("cuda", name % count)
    return torch.device("cuda")


# ---------------------------------------------------------------------------------------------- hashing

sha256_of = file_sha256  # cached per process: hashing 500 MB takes seconds


# ------------------------------------------------------------------------------- torch hub checkpoints


def torch_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder: `$TORCH_HOME/hub/checkpoints` (read from the environment now)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_torch_checkpoint(explicit: str, filename: str) -> Located:
    """The checkpoint at the explicit path or in torch hub's cache, without network access."""
    if explicit:
        path = Path(explicit).expanduser()
        return Located(path if path.is_file() else None, str(path), "parameter")
    path = torch_checkpoint_dir() / filename
    return Located(path if path.is_file() else None, str(path), "cache")


def resolve_torch_checkpoint(explicit: str, filename: str, url: str, what: str) -> Located:
    """`find_torch_checkpoint`, else a download into torch hub's cache, else a TeacherError saying what to do."""
    found = find_torch_checkpoint(explicit, filename)
    if found.path is not None:
        return found
    if explicit:
        raise TeacherError(f"{what} weights not found: the teacher parameter weights={explicit!r} is not a file. "
                           f"Get {filename} from {url} and give its path, or leave weights empty to use the "
                           f"torch hub cache ({torch_checkpoint_dir() / filename}).")
    destination = Path(found.expected)
    blocked = downloads_disabled()
    reason = f"downloads are disabled ({blocked}=1)" if blocked else ""
    if not blocked:
        import torch.hub

        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            # as load_state_dict_from_url does: the sha256 must start with the hash in the file name, and the
            # file appears at its destination only once complete (torch hub downloads to a temporary file)
            prefix = filename.rsplit("-", 1)[-1].split(".")[0]
            torch.hub.download_url_to_file(url, str(destination), hash_prefix=prefix, progress=False)
            return Located(destination, str(destination), "download")
        except Exception as exc:  # no network, a proxy, a full disk, a corrupt download: all say the same
            reason = f"the download failed: {type(exc).__name__}: {exc}"
    raise TeacherError(f"{what} weights not found: {filename} is not at {destination} and {reason}. Get it from "
                       f"{url} and put it at {destination} (torch hub's cache, $TORCH_HOME/hub/checkpoints), or "
                       f"give its path as the teacher parameter weights.")


# ------------------------------------------------------------------------------ Hugging Face models


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment now (huggingface_hub reads it at import)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_cache_folder(model_id: str, cache: Path | None = None) -> Path:
    """Where the hub cache keeps a model: `<cache>/models--<org>--<name>` (refs/main, snapshots/<commit>/)."""
    return (cache or hf_hub_cache()) / ("models--" + model_id.replace("/", "--"))


def hf_weights_file(model_dir: Path) -> Path | None:
    """The weights file transformers would load from a model folder (safetensors first)."""
    if not (model_dir / HF_CONFIG_FILE).is_file():
        return None
    for name in HF_WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def _hf_cached_dir(model_id: str, cache: Path) -> Path | None:
    """The cached snapshot folder of the model's `main` revision holding config and weights, or None."""
    import huggingface_hub

    config = huggingface_hub.try_to_load_from_cache(model_id, HF_CONFIG_FILE, cache_dir=str(cache))
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if hf_weights_file(folder) is not None else None


def find_hf_model(explicit: str, model_id: str) -> Located:
    """The model folder given explicitly (or the folder of a weights file given) or in the hub cache."""
    if explicit:
        path = Path(explicit).expanduser()
        folder = path.parent if path.is_file() else path
        weights = hf_weights_file(folder)
        return Located(weights, str(folder), "parameter")
    cache = hf_hub_cache()
    folder = _hf_cached_dir(model_id, cache)
    return Located(None if folder is None else hf_weights_file(folder), str(hf_cache_folder(model_id, cache)),
                   "cache")


def resolve_hf_model(explicit: str, model_id: str, url: str, what: str) -> Located:
    """`find_hf_model`, else a download into the hub cache, else a TeacherError saying what to do.

    `Located.path` is the weights file (whose sha256 goes into the store's fingerprint); its folder is the
    model folder that `from_pretrained` loads.
    """
    found = find_hf_model(explicit, model_id)
    if found.path is not None:
        return found
    files = f"{HF_CONFIG_FILE} and {' or '.join(HF_WEIGHT_FILES)}"
    if explicit:
        raise TeacherError(f"{what} weights not found: the teacher parameter weights={explicit!r} is not a Hugging "
                           f"Face model folder holding {files}. Get them from {url} (the files of {model_id}).")
    cache = hf_hub_cache()
    blocked = downloads_disabled("HF_HUB_OFFLINE")
    reason = f"downloads are disabled ({blocked}=1)" if blocked else ""
    if not blocked:
        try:
            folder = _hf_download(model_id, cache)
            return Located(hf_weights_file(folder), str(folder), "download")
        except Exception as exc:
            reason = f"the download failed: {type(exc).__name__}: {_first_line(exc)}"
    raise TeacherError(
        f"{what} weights not found: {model_id} ({files}) is not in the Hugging Face cache at "
        f"{hf_cache_folder(model_id, cache)} and {reason}. Get it from {url}: on a machine with internet run "
        f"`hf download {model_id}` and copy its "
        f"{hf_cache_folder(model_id, cache).name} folder into {cache} here ($HF_HUB_CACHE, or $HF_HOME/hub), or "
        f"put the files in any folder and give that folder as the teacher parameter weights.")


def _hf_download(model_id: str, cache: Path) -> Path:
    """Download config, preprocessor config and one weights file into the hub cache; the snapshot folder.

    The repository's file list comes first: without network it fails at once (a file download would retry
    for about 20 s), and it tells which weights file exists, so that only one of them is fetched.
    """
    import huggingface_hub

    present = {s.rfilename for s in (huggingface_hub.model_info(model_id).siblings or [])}
    weights = next((name for name in HF_WEIGHT_FILES if name in present), None)
    if weights is None or HF_CONFIG_FILE not in present:
        raise FileNotFoundError(f"{model_id} has no {HF_CONFIG_FILE} or none of {HF_WEIGHT_FILES}")
    wanted = [HF_CONFIG_FILE, weights] + [n for n in ("preprocessor_config.json",) if n in present]
    return Path(huggingface_hub.snapshot_download(model_id, cache_dir=str(cache), allow_patterns=wanted))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
