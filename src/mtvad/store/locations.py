"""Where a store lives: a local folder, a packed `.zip` (read-only, in place) or an fsspec URL (s3://...,
storage options from $VAD_STORAGE_OPTIONS), and what a path holds before anything is opened."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import zarr
from zarr.storage import WrapperStore

from mtvad.errors import StoreError

STORAGE_OPTIONS_ENV = "VAD_STORAGE_OPTIONS"  # JSON dict of fsspec storage options for remote URLs


def is_zip(url: str | Path) -> bool:
    """A packed store (`vad store pack`): a local file whose name ends in .zip."""
    return is_local(url) and str(url).lower().endswith(".zip")


def storage_options_from_env(url: str | Path, storage_options: dict | None = None) -> dict | None:
    """Explicit options win; for a remote URL without them, the JSON dict in $VAD_STORAGE_OPTIONS (if set).

    Credentials and endpoints usually need no options at all: s3fs (through botocore) reads AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL and
    AWS_ENDPOINT_URL_S3 itself; fsspec applies FSSPEC_<PROTOCOL>_<OPTION> variables to every filesystem."""
    if storage_options is not None or is_local(url):
        return storage_options
    raw = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not raw:
        return None
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StoreError(f"${STORAGE_OPTIONS_ENV} is not valid JSON ({exc}); give a JSON object, e.g. "
                         '\'{"anon": true}\'') from None
    if not isinstance(options, dict):
        raise StoreError(f"${STORAGE_OPTIONS_ENV} must be a JSON object, got {type(options).__name__}")
    return options


class MissingChunkError(StoreError):
    """A chunk file that a read needs is absent (Zarr would have returned the fill value)."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        super().__init__(f"{url}: chunk file {key} is missing (deleted?), its data is lost: `vad store verify "
                         f"{url}` lists what is missing, `vad precompute` on the store recomputes it")


CHUNK_KEY = re.compile(r"^(?P<array>.+)/c(?:/\d+)+$")  # <array path>/c/<i>/<j>/... (Zarr v3 default keys)
FILL_MEANS_NOT_WRITTEN = ("blocks_done",)  # arrays whose absent chunk is a value by design (0: not computed)


def chunk_array(key: str) -> str | None:
    """The array path of a chunk key, or None for a metadata key."""
    m = CHUNK_KEY.match(key)
    return m.group("array") if m else None


class StrictStore(WrapperStore):
    """A zarr store on which reading an absent chunk is a `MissingChunkError`, not the fill value: in a vad store
    a data chunk exists once its block is computed, so an absent one is lost data (readers check completeness
    first, so they meet this only for data deleted since). `blocks_done` keeps Zarr's rule (absent = 0)."""

    def __init__(self, store, url: str = ""):
        super().__init__(store)
        self.url = url

    def _with_store(self, store):
        return type(self)(store, self.url)

    def _check(self, key: str, value):
        if value is None:
            array = chunk_array(key)
            if array is not None and array.rsplit("/", 1)[-1] not in FILL_MEANS_NOT_WRITTEN:
                raise MissingChunkError(self.url, key)
        return value

    async def get(self, key, prototype, byte_range=None):
        return self._check(key, await self._store.get(key, prototype, byte_range))

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        return [self._check(key, v) for (key, _), v in zip(key_ranges, values)]


def zarr_store(url: str | Path, read_only: bool, storage_options: dict | None = None, strict: bool = True):
    """The zarr store at a path, .zip or URL; `strict`: an absent chunk is an error on read (`StrictStore`)."""
    url = str(url)
    if is_zip(url):
        if not read_only:
            raise StoreError(f"{url}: a packed store (.zip) is read-only: `vad store unpack` it to a folder to "
                             "resume or change it")
        raw = zarr.storage.ZipStore(local_path(url), mode="r")
    elif "://" in url and not url.startswith("file://"):
        raw = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    else:
        raw = zarr.storage.LocalStore(url.removeprefix("file://"), read_only=read_only)
    return StrictStore(raw, url) if strict else raw


def unwrap(zstore):
    """The store a `StrictStore` wraps (itself otherwise)."""
    return zstore._store if isinstance(zstore, StrictStore) else zstore


def is_local(url: str | Path) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def local_path(url: str | Path) -> Path:
    return Path(str(url).removeprefix("file://"))


def path_state(url: str | Path, storage_options: dict | None = None) -> str:
    """'missing', 'empty' (an empty folder), 'file', 'zip' (a .zip file), 'zarr' (has zarr.json) or 'other'
    (non-empty folder)."""
    import fsspec

    if is_zip(url):
        path = local_path(url)
        if path.is_file():
            return "zip"
        return "other" if path.exists() else "missing"
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        if fs.exists(path.rstrip("/") + "/zarr.json"):
            return "zarr"
        if not fs.exists(path):
            return "missing"
        if fs.isfile(path):
            return "file"
        return "other" if fs.ls(path) else "empty"
    except (ImportError, ValueError) as exc:  # no filesystem for this protocol (s3fs not installed, ...)
        raise StoreError(f"{url}: cannot open this URL ({exc})") from None
    except Exception as exc:  # unreachable endpoint, refused credentials, ...
        if is_local(url):
            raise
        raise StoreError(
            f"{url}: cannot reach the store ({type(exc).__name__}: {exc}). For S3 check AWS_ACCESS_KEY_ID, "
            f"AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and AWS_DEFAULT_REGION; other "
            f"fsspec options go in ${STORAGE_OPTIONS_ENV} as JSON") from None


def run_sync(coro):
    """Run a coroutine of a zarr store on zarr's own IO loop, where an fsspec store's async filesystem lives
    (a private zarr API: there is no public one; pyproject pins zarr<4 for it, and the store tests use it)."""
    from zarr.core.sync import sync

    return sync(coro)


def get_many(zstore, keys: list[str]) -> list[bytes | None]:
    """The raw bytes of several keys of a zarr store, fetched concurrently (None where absent)."""
    from zarr.buffer import default_buffer_prototype

    zstore = unwrap(zstore)

    async def fetch() -> list:
        proto = default_buffer_prototype()
        return await asyncio.gather(*(zstore.get(key, proto) for key in keys))

    return [None if buf is None else buf.to_bytes() for buf in run_sync(fetch())]


def list_keys(zstore, prefix: str = "") -> list[str]:
    """Every key of a zarr store (chunk files and metadata) under `prefix` (a folder, ending in '/'), relative to
    its root."""

    async def collect() -> list[str]:
        if prefix:
            return [key async for key in zstore.list_prefix(prefix)]
        return [key async for key in zstore.list()]

    return run_sync(collect())
