"""`vad store diff`: how two stores differ (schema, dataset, teachers, videos, frame counts, completeness,
contents by checksum) and whether they are interchangeable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtvad.store.access import Store, open_store
from mtvad.store.schema import CHECKSUMMED, PROVENANCE


def _video_facts(store: Store) -> dict[str, dict[str, Any]]:
    facts = {}
    for video in store.videos():
        done = video.blocks_done()
        checksums = np.zeros(video.group["checksums"].shape, np.uint32)
        if done.any():  # only blocks marked done have a checksums chunk; a lost one is a gap (below)
            checksums[done == 1] = video.group["checksums"].oindex[np.flatnonzero(done == 1)]
        facts[video.key] = {"n_frames": video.n_frames, "done": done, "checksums": checksums,
                            "label_crc32": video.group["label"].attrs.get("crc32") if video.has_labels else None}
    return facts


def diff_stores(a: str | Path, b: str | Path) -> dict[str, Any]:
    """How two stores differ, and whether a run trained or scored on one would be the same on the other."""
    sa, sb = open_store(a), open_store(b)
    # checksums describe data only where the data is still there: a deleted chunk is no "identical contents"
    gaps = {"a": [str(g) for g in sa.gaps()], "b": [str(g) for g in sb.gaps()]}
    aa, ab = sa.attrs, sb.attrs
    fields = []

    def row(name: str, va: Any, vb: Any) -> None:
        fields.append({"field": name, "a": va, "b": vb, "same": va == vb})

    row("schema_version", aa.get("schema_version"), ab.get("schema_version"))
    row("dataset", aa.get("dataset"), ab.get("dataset"))
    row("resolution", aa.get("resolution"), ab.get("resolution"))
    row("chunk_frames", aa.get("chunk_frames"), ab.get("chunk_frames"))
    for role in sorted(set(sa.teachers) | set(sb.teachers)):
        ta, tb = sa.teachers.get(role) or {}, sb.teachers.get(role) or {}
        row(f"{role} teacher", f"{ta.get('name')} v{ta.get('version')}" if ta else None,
            f"{tb.get('name')} v{tb.get('version')}" if tb else None)
        pa, pb = ta.get("params") or {}, tb.get("params") or {}
        changed = {k: (pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
        row(f"{role} params", {k: v[0] for k, v in changed.items()} or "same",
            {k: v[1] for k, v in changed.items()} or "same")
        row(f"{role} weights", ta.get("weights_sha256"), tb.get("weights_sha256"))
    row("classes", aa.get("classes"), ab.get("classes"))
    row("fingerprint", sa.fingerprint, sb.fingerprint)
    provenance = [{"field": k, "a": aa.get(k), "b": ab.get(k), "same": aa.get(k) == ab.get(k)} for k in PROVENANCE]

    fa, fb = _video_facts(sa), _video_facts(sb)
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    common = sorted(set(fa) & set(fb))
    frame_counts = [{"video": v, "a": fa[v]["n_frames"], "b": fb[v]["n_frames"]}
                    for v in common if fa[v]["n_frames"] != fb[v]["n_frames"]]
    missing_a = int(sum((f["done"] == 0).sum() for f in fa.values()))
    missing_b = int(sum((f["done"] == 0).sum() for f in fb.values()))

    # contents, by checksum: blocks computed in both, videos of equal length
    differing: dict[str, dict[str, int]] = {}
    labels_differ = []
    compared = 0
    for v in common:
        if fa[v]["n_frames"] != fb[v]["n_frames"]:
            continue
        both = (fa[v]["done"] == 1) & (fb[v]["done"] == 1)
        compared += int(both.sum())
        ne = fa[v]["checksums"][both] != fb[v]["checksums"][both]
        counts = {name: int(ne[:, i].sum()) for i, name in enumerate(CHECKSUMMED) if ne[:, i].any()}
        if counts:
            differing[v] = counts
        if fa[v]["label_crc32"] != fb[v]["label_crc32"]:
            labels_differ.append(v)
    inputs_differ = sorted(v for v, c in differing.items() if "frames" in c)
    outputs_differ = sorted(v for v, c in differing.items() if set(c) - {"frames"})

    reasons = []
    for side in ("a", "b"):
        if gaps[side]:
            n = len(gaps[side])
            reasons.append(f"{side.upper()} is damaged ({n} thing{'s' * (n != 1)} missing, the first "
                           f"{gaps[side][0]}): `vad store verify` lists them")
    for f in fields:
        if not f["same"] and f["field"] in ("schema_version", "dataset", "fingerprint"):
            reasons.append(f"{f['field']} differs")
    if only_a or only_b:
        reasons.append(f"videos present in one store only ({len(only_a)} in A, {len(only_b)} in B)")
    if frame_counts:
        reasons.append(f"frame counts differ in {len(frame_counts)} videos")
    if missing_a or missing_b:
        reasons.append(f"incomplete (A: {missing_a} blocks missing, B: {missing_b})")
    if inputs_differ:
        reasons.append(f"input frames differ in {len(inputs_differ)} videos (other source footage)")
    if labels_differ:
        reasons.append(f"ground-truth labels differ in {len(labels_differ)} videos")
    notes = []
    if outputs_differ and not inputs_differ:
        notes.append(f"teacher outputs differ in {len(outputs_differ)} videos with identical input frames and "
                     "the same teachers: a non-deterministic teacher (GPU)? Scores may differ slightly")
    identical = not differing and not labels_differ and not reasons
    return {
        "a": str(a), "b": str(b),
        "fields": fields,
        "provenance": provenance,
        "videos": {"a": len(fa), "b": len(fb), "common": len(common), "only_a": only_a, "only_b": only_b,
                   "frame_counts": frame_counts},
        "missing_blocks": {"a": missing_a, "b": missing_b},
        "missing_data": gaps,
        "contents": {"blocks_compared": compared, "differing": differing, "labels_differ": labels_differ,
                     "identical": identical},
        "interchangeable": not reasons,
        "reasons": reasons,
        "notes": notes,
    }
