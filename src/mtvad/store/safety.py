"""A store is data, never code: the allow-list of Zarr data types and codecs, checked on an array's raw
zarr.json before anything of it is decoded."""

from __future__ import annotations

import json
from typing import Any, Iterator

from mtvad.errors import StoreError

# A store is data, never code: only these Zarr v3 data types and codecs may appear in a video's arrays
# (object/string dtypes and codecs such as numcodecs.pickle could run code or allocate unboundedly on decode).
ALLOWED_DATA_TYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                                "float16", "float32", "float64"})
ALLOWED_CODECS = frozenset({"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "sharding_indexed",
                            "numcodecs.delta"})


def codec_names(codecs: Any) -> Iterator[str]:
    """Names of a zarr.json codec list, nested ones (sharding) included; malformed entries give '<...>'."""
    if not isinstance(codecs, list):
        yield f"<codecs {json.dumps(codecs)[:60]}>"
        return
    for codec in codecs:
        if isinstance(codec, str):
            yield codec
        elif isinstance(codec, dict) and isinstance(codec.get("name"), str):
            yield codec["name"]
            config = codec.get("configuration") or {}
            for key in ("codecs", "index_codecs"):
                if isinstance(config, dict) and key in config:
                    yield from codec_names(config[key])
        else:
            yield f"<{json.dumps(codec)[:60]}>"


def check_array_metadata(raw: bytes, where: str) -> None:
    """Refuse an array whose zarr.json could make decoding run code: a data type or codec outside the
    allow-lists, a storage transformer, or metadata that is not Zarr v3 JSON. Reads the raw JSON, before
    zarr resolves anything of it."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: zarr.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        raise StoreError(f"{where}: zarr.json is not Zarr v3 metadata")
    if meta.get("node_type") != "array":
        return  # a group where an array should be: validate() names it
    dtype = meta.get("data_type")
    dtype_name = dtype.get("name") if isinstance(dtype, dict) else dtype
    if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DATA_TYPES:
        raise StoreError(f"{where}: data type {json.dumps(dtype)[:80]} is refused: a store is data, never code "
                         f"(allowed: {', '.join(sorted(ALLOWED_DATA_TYPES))})")
    for name in codec_names(meta.get("codecs", [])):
        if name not in ALLOWED_CODECS:
            raise StoreError(f"{where}: codec {name!r} is refused: a store is data, never code "
                             f"(allowed: {', '.join(sorted(ALLOWED_CODECS))})")
    if meta.get("storage_transformers"):
        raise StoreError(f"{where}: storage transformers {json.dumps(meta['storage_transformers'])[:80]} are "
                         "refused: a store is data, never code")
