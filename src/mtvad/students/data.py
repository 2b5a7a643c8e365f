"""Training samples of each branch, read from a store: torch Datasets, samplers, and the decoding primitives.

What a sample reads is the branch's `BranchSpec` (made by `mtvad.students.branches`; t = the frame the sample is
about; T = the video's frame count):

| branch | reads (store arrays at frames) | t ranges over | target |
|---|---|---|---|
| appearance, target seg-future | frames t-1, t; seg t+1 | 1 .. T-2 | one-hot seg of t+1 (paper 3.2) |
| appearance, target seg        | frames t-1, t; seg t   | 1 .. T-1 | one-hot seg of t (Table 2's Seg) |
| motion | frame t; flow_mag t; seg t (masking); flow_ang t, depth t (attention) | flow_valid_from .. T-1 | flow magnitude of t (flow t-1 -> t) masked by seg t > 0 (paper 4.3) |

Datasets return the stored integer arrays (uint8 / uint16, at store resolution) and nothing else: decoding
(scales, masking, ImageNet normalisation, resizing to `--size`, one-hot) happens on the training device in
the branch's `batch` (with `normalise_frames` / `resize` from here), so a GPU does the arithmetic and the
loader only moves compact bytes.

Two modes:
- in memory (`InMemoryDataset`): the needed arrays of all training videos are read once into uint8/uint16
  tensors; a batch is a gather (`__getitems__`), in the main process. Auto when they fit the RAM budget.
- streaming (`StreamingDataset`): each DataLoader worker opens its own store handle lazily (never in
  `__init__`, never pickled) and keeps a small LRU cache of decoded chunks; the sampler shuffles whole chunks
  then samples within a window of chunks, so each chunk is decompressed about once per epoch.

Sample order is a function of (seed, epoch) only, so a resumed run sees the same batches as an uninterrupted
one (`EpochBatchSampler.skip`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from mtvad.errors import ConfigError, StoreError
from mtvad.store.access import Store, open_store
from mtvad.store.schema import ARRAYS
from mtvad.students.config import TrainConfig

if TYPE_CHECKING:
    from mtvad.students.branches import Branch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_SCALE = ARRAYS["flow_mag"].scale
ANGLE_SCALE = ARRAYS["flow_ang"].scale
DEPTH_SCALE = ARRAYS["depth"].scale


# ------------------------------------------------------------------------------------------- what to read


@dataclass(frozen=True)
class BranchSpec:
    """What one branch reads per sample: batch key -> (store array, frame offsets relative to t)."""

    branch: str
    reads: dict[str, tuple[str, tuple[int, ...]]]
    first: int  # smallest t
    after: int  # frames needed after t (largest t = T - 1 - after)
    why: dict[str, str] = field(default_factory=dict)  # array -> why it is needed (for error messages)

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a, _ in self.reads.values()))

    def t_range(self, n_frames: int) -> range:
        return range(self.first, max(self.first, n_frames - self.after))


def n_outputs(classes: Mapping[int, str]) -> int:
    """Output channels of a segmentation student: one per class id up to the largest id of the vocabulary.

    Segmentation ids are the teacher's own (COCO ids for Mask R-CNN, up to 90; 91 for DeepLab's unclassified
    blobs), not positions in the vocabulary, and the one-hot target indexes channels by id: a vocabulary
    {0, 1, 2, 91} needs 92 outputs (the unused ids' channels learn to stay at 0). Contiguous vocabularies
    {0 .. n-1} give n, as before."""
    return max(int(k) for k in classes) + 1 if classes else 0


def check_store(store: Store, spec: BranchSpec, video_ids: Sequence[str], split: str = "train") -> None:
    """Every video has the arrays this branch needs (right dtype and shape) and all its blocks computed."""
    if not video_ids:
        raise StoreError(f"{store.url}: no {split} videos to train on")
    for vid in video_ids:
        video = store.video(split, vid)
        for name in spec.arrays:
            if name not in video.group:
                raise StoreError(f"{store.url}: video {video.key} lacks array '{name}', needed by the "
                                 f"{spec.branch} branch for {spec.why.get(name, name)}")
            arr, want = video.group[name], ARRAYS[name]
            shape = video.expected_shape(name)
            if str(arr.dtype) != want.dtype or tuple(arr.shape) != shape:
                raise StoreError(f"{store.url}: {video.key}/{name} is {arr.dtype}{tuple(arr.shape)}, the contract "
                                 f"says {want.dtype}{shape}")
        store.require_complete([video.key])


def sample_index(spec: BranchSpec, n_frames: Sequence[int]) -> np.ndarray:
    """(N, 2) int64 [video position, t] of every sample, videos in order, t increasing."""
    rows = [np.stack([np.full(len(r), v), np.asarray(r)], 1) for v, n in enumerate(n_frames)
            if len(r := spec.t_range(n))]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)


def needed_bytes(store: Store, spec: BranchSpec, video_ids: Sequence[str], split: str = "train") -> int:
    total = 0
    for vid in video_ids:
        video = store.video(split, vid)
        for name in spec.arrays:
            arr = video.group[name]
            total += int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
    return total


def default_ram_budget() -> int:
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


# ------------------------------------------------------------------------------------------------ datasets


class StoreSamples(Dataset):
    """Common part: the sample index and the per-sample layout; subclasses say where bytes come from."""

    def __init__(self, url: str, split: str, video_ids: Sequence[str], n_frames: Sequence[int],
                 spec: BranchSpec, n_classes: int, channels: Sequence[int] = ()):
        self.url, self.split, self.video_ids = url, split, list(video_ids)
        self.n_frames, self.spec, self.n_classes = list(n_frames), spec, n_classes
        self.index = sample_index(spec, self.n_frames)
        # frames: 1 channel when every video is grey, else 3 (a grey video's frame broadcast to three)
        self.frame_channels = max(channels, default=3)

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, i: int) -> tuple[str, int]:
        """(video id, t) of sample i."""
        v, t = self.index[i]
        return self.video_ids[v], int(t)


class InMemoryDataset(StoreSamples):
    """The needed arrays of every video held as uint8/uint16 tensors; batches are gathers."""

    def __init__(self, store: Store, split: str, video_ids: Sequence[str], spec: BranchSpec, n_classes: int,
                 reads: dict[tuple[str, str], np.ndarray] | None = None):
        """`reads`: {(video id, array name): the array as stored}, shared by datasets of the same videos so each
        array is read from the store once (scoring both branches); filled with what this one reads."""
        videos = [store.video(split, v) for v in video_ids]
        super().__init__(store.url, split, video_ids, [v.n_frames for v in videos], spec, n_classes,
                         [v.channels for v in videos])
        reads = {} if reads is None else reads
        self.starts = torch.tensor(np.concatenate([[0], np.cumsum(self.n_frames)[:-1]]), dtype=torch.int64)
        total = sum(self.n_frames)
        self.arrays: dict[str, torch.Tensor] = {}
        for name in spec.arrays:
            first = videos[0].group[name]
            dtype = getattr(torch, str(first.dtype))
            shape = (*first.shape[1:-1], self.frame_channels) if name == "frames" else first.shape[1:]
            self.arrays[name] = big = torch.empty((total, *shape), dtype=dtype)
            for vid, video, start in zip(video_ids, videos, self.starts.tolist()):
                if (vid, name) not in reads:
                    reads[vid, name] = np.ascontiguousarray(video.group[name][:])
                big[start : start + video.n_frames] = torch.from_numpy(reads[vid, name])  # grey frames broadcast
            if name == "seg":
                top = int(big.max()) if total else 0
                if top >= n_classes:
                    raise StoreError(f"{store.url}: seg holds class id {top} but the store's class vocabulary "
                                     f"goes up to id {n_classes - 1}")
        self._global = self.starts[torch.from_numpy(self.index[:, 0])] + torch.from_numpy(self.index[:, 1])

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.arrays.values())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        # A stack of per-frame views is one memcpy per frame, in this thread. index_select would be as fast
        # alone but is parallelised with OpenMP, and on a busy machine its threads wait for cores: measured
        # 0.16 ms vs 124 ms for 16 frames on 2 shared cores.
        starts = self._global[torch.as_tensor(indices, dtype=torch.int64)].tolist()
        batch = {}
        for key, (name, offsets) in self.spec.reads.items():
            arr = self.arrays[name]
            got = torch.stack([arr[g + o] for g in starts for o in offsets])
            batch[key] = got.view(len(indices), len(offsets), *got.shape[1:])
        return batch


class StreamingDataset(StoreSamples):
    """Reads each sample from the store in the loader worker, through a per-worker LRU cache of chunks."""

    def __init__(self, store: Store, split: str, video_ids: Sequence[str], spec: BranchSpec, n_classes: int,
                 cache_chunks: int = 48):
        videos = [store.video(split, v) for v in video_ids]
        super().__init__(store.url, split, video_ids, [v.n_frames for v in videos], spec, n_classes,
                         [v.channels for v in videos])
        self.chunk_frames, self.cache_chunks = store.chunk_frames, cache_chunks
        self._store: Store | None = None
        self._pid: int | None = None
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:  # a worker opens its own handle: never ship one
        state = dict(self.__dict__)
        state.update(_store=None, _pid=None, _cache=OrderedDict())
        return state

    def _handle(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid, self._cache = open_store(self.url, validate=False), os.getpid(), OrderedDict()
        return self._store

    def _chunk(self, v: int, name: str, block: int) -> np.ndarray:
        key = (v, name, block)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        video = self._handle().video(self.split, self.video_ids[v])
        start = block * self.chunk_frames
        data = video.group[name][start : min(start + self.chunk_frames, self.n_frames[v])]
        self._cache[key] = data
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return data

    def _frame(self, v: int, name: str, t: int) -> np.ndarray:
        block = t // self.chunk_frames
        return self._chunk(v, name, block)[t - block * self.chunk_frames]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, t = (int(x) for x in self.index[i])
        out = {}
        for key, (name, offsets) in self.spec.reads.items():
            arr = np.stack([self._frame(v, name, t + o) for o in offsets])
            if name == "frames" and arr.shape[-1] < self.frame_channels:
                arr = np.repeat(arr, self.frame_channels, axis=-1)  # a grey video among colour ones
            if name == "seg" and arr.max(initial=0) >= self.n_classes:
                raise StoreError(f"{self.url}: {self.split}/{self.video_ids[v]} frame {t}: seg holds class id "
                                 f"{arr.max()} but the store's class vocabulary goes up to id {self.n_classes - 1}")
            out[key] = torch.from_numpy(arr)
        return out

    def blocks(self) -> np.ndarray:
        """Chunk id of every sample (for chunk-aware shuffling): video position * 1e6 + chunk."""
        return self.index[:, 0] * 1_000_000 + self.index[:, 1] // self.chunk_frames


# ------------------------------------------------------------------------------------------------ sampling


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of sample indices whose order depends only on (seed, epoch); the last partial batch is dropped.

    shuffle='random': a uniform permutation per epoch. shuffle='chunks': chunks in random order, samples
    shuffled within windows of `window` chunks (streaming mode: each chunk is decoded about once per epoch).
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: str = "random",
                 chunk_ids: np.ndarray | None = None, window: int = 8):
        if n < batch_size:
            raise ConfigError(f"only {n} training samples, fewer than the batch size {batch_size}: lower "
                              "--batch-size or use more videos")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.chunk_ids, self.window = chunk_ids, window
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n_batches: int) -> None:
        """Start the next iteration at batch `n_batches` of the epoch (a resumed run)."""
        self._skip = n_batches

    def __len__(self) -> int:
        return self.n // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.shuffle == "random" or self.chunk_ids is None:
            return torch.randperm(self.n, generator=g).numpy()
        chunks, inverse = np.unique(self.chunk_ids, return_inverse=True)
        members = [np.flatnonzero(inverse == c) for c in range(len(chunks))]
        chunk_order = torch.randperm(len(chunks), generator=g).tolist()
        out = []
        for w in range(0, len(chunk_order), self.window):
            idx = np.concatenate([members[c] for c in chunk_order[w : w + self.window]])
            out.append(idx[torch.randperm(len(idx), generator=g).numpy()])
        return np.concatenate(out)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch)
        start, self._skip = self._skip, 0
        for b in range(start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def _passthrough(batch):
    return batch


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class TrainData:
    dataset: StoreSamples
    sampler: EpochBatchSampler
    loader: DataLoader
    in_memory: bool
    needed_bytes: int


def make_train_data(store: Store, branch: str | Branch, config: TrainConfig, device: torch.device,
                    split: str = "train", video_ids: Sequence[str] | None = None) -> TrainData:
    """Dataset, sampler and loader of one branch over `video_ids` (default: the store's training videos, the
    first `limit_videos`), checked first. Training passes the ids left after the validation split
    (`mtvad.students.validation.split_videos`)."""
    from mtvad.students.branches import get_branch  # branches build on this module

    spec = get_branch(branch).spec(config, store.resolution, int(store.attrs.get("flow_valid_from", 1)))
    if video_ids is None:
        video_ids = store.video_ids(split)[: config.data.limit_videos]
    video_ids = list(video_ids)
    check_store(store, spec, video_ids, split)
    n_classes = n_outputs(store.classes)
    nbytes = needed_bytes(store, spec, video_ids, split)
    in_memory = config.data.in_memory
    if in_memory is None:
        budget = config.data.ram_budget_gb * 2**30 if config.data.ram_budget_gb else default_ram_budget()
        in_memory = nbytes <= budget
    if in_memory:
        dataset: StoreSamples = InMemoryDataset(store, split, video_ids, spec, n_classes)
        sampler = EpochBatchSampler(len(dataset), config.optim.batch_size, config.run.seed)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=_passthrough)
    else:
        dataset = StreamingDataset(store, split, video_ids, spec, n_classes)
        sampler = EpochBatchSampler(len(dataset), config.optim.batch_size, config.run.seed, shuffle="chunks",
                                    chunk_ids=dataset.blocks())
        workers = config.data.workers
        if workers is None:
            workers = min(4, max(0, (os.cpu_count() or 1) - 1))
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                            persistent_workers=workers > 0, worker_init_fn=_seed_worker,
                            generator=torch.Generator().manual_seed(config.run.seed),
                            prefetch_factor=4 if workers > 0 else None)
    return TrainData(dataset, sampler, loader, bool(in_memory), nbytes)


def background(iterable: Iterable, depth: int = 2) -> Iterator:
    """Iterate in a background thread, `depth` items ahead (overlaps gathering with the training step)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let the producer finish its put and notice the stop
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


# ------------------------------------------------------------------------------------------------ decoding


def resize(x: torch.Tensor, size: Sequence[int] | None, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, H, W) to `size` (H, W): bilinear (antialiased when shrinking) or nearest (class ids)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    size = (int(size[0]), int(size[1]))
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def normalise_frames(frames: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """uint8 (B, k, H, W, 3) RGB, or (B, k, H, W, 1) grey -> float (B, 3k, h, w), resized, ImageNet mean/std
    normalised; a grey frame is an RGB frame of three equal channels."""
    b, k, h, w, c = frames.shape
    if c == 1:  # copied, not a view: the same memory layout as RGB input, so the same convolution kernels run
        frames, c = frames.expand(b, k, h, w, 3).contiguous(), 3
    x = resize(frames.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w).float(), size)  # resizing is linear
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).repeat(k).view(1, k * c, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).repeat(k).view(1, k * c, 1, 1)
    return torch.addcmul(-mean / std, x, 1 / (255 * std))  # (x / 255 - mean) / std in one pass


def to_device(raw: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A raw batch's tensors on `device` (asynchronous copies from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in raw.items()}
