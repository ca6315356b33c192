"""Cutting a smaller logit store out of a bigger one, exactly, without the teacher (`pipeline store slice`).

A row stores the teacher's top K ids by descending logit, their scores s (float16, z - max z) and, at
each listed T, c_T = logsumexp(s / T) over the full vocabulary and the tail mass outside the top K. For
k < K the top k ids are the first k stored ones (the ranking does not depend on T), their scores are
unchanged, and so is c_T (a sum over the whole vocabulary, whatever k is). Only the tail grows, by the
probability of every dropped id at that T:

    tail'_T = tail_T + sum_{r = k .. K-1} exp(s_r / T - c_T)

So a slice equals a dump at the smaller k up to the float16 rounding of the dropped scores (the dump
sums the same terms from float32 logits) and float32 rounding; `tests/test_store_slicing.py` derives
the bound and checks it against a direct dump. Dropping temperatures drops columns; dropping a split
drops its arrays. Nothing is re-estimated: a temperature that is not stored cannot be sliced in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.logit_store import LogitStore, LogitStoreMeta
from pipeline.teacher_rows import TeacherRows, check_temperatures


def narrowed(rows: TeacherRows, k: int, columns: list[int]) -> TeacherRows:
    """`rows` cut to their first k ids and the temperature columns `columns` (in that order).

    The dropped ids' probabilities are summed in float64 from the stored scores and c_T, then added
    to the stored tail; ids, scores and c_T are copied bit for bit."""
    scores = rows.scores[:, k:].double()  # [n, K - k] dropped scores
    tails = []
    for j in columns:
        c = rows.log_normalizer[:, j].double()  # [n]
        dropped = torch.exp(scores / rows.temperatures[j] - c[:, None]).sum(dim=-1)  # [n]
        tails.append(rows.tail_mass[:, j].double() + dropped)
    tail = torch.stack(tails, dim=1).float() if tails else rows.tail_mass[:, :0]
    return TeacherRows(rows.ids[:, :k].clone(), rows.scores[:, :k].clone(), rows.log_normalizer[:, columns].clone(),
                       tail, tuple(rows.temperatures[j] for j in columns), rows.vocab_size)


def temperature_columns(stored: tuple[float, ...], wanted: list[float], where: str) -> list[int]:
    """Column of each wanted temperature among the stored ones (all of them when none is wanted)."""
    if not wanted:
        return list(range(len(stored)))
    columns = []
    for t in check_temperatures(wanted, "--temperature"):
        match = [j for j, s in enumerate(stored) if math.isclose(s, t, rel_tol=1e-6)]
        if not match:
            raise UserError(f"--temperature {t:g} is not stored in {where} (stored: "
                            f"{', '.join(f'{s:g}' for s in stored)}); a slice keeps stored temperatures only: "
                            f"pick among them, or dump the teacher again with --temperature {t:g}")
        columns.append(match[0])
    return columns


def sliced_meta(source: LogitStore, k: int | None, temperatures: list[float], split: str) -> tuple[LogitStoreMeta, list[int]]:
    """(the slice's metadata, the source's temperature columns it keeps) after checking the request."""
    meta, where = source.meta, f"STORE {source.location}"
    if getattr(meta, "rows", "topk") != "topk":
        raise UserError(f"{where} holds {meta.rows} rows; `store slice` cuts top-k rows only (draws cannot be "
                        f"thinned exactly): dump the teacher again with fewer samples")
    k = meta.k if k is None else k
    if not 1 <= k <= meta.k:
        raise UserError(f"--top-k {k}: {where} stores the top {meta.k} ids; a slice can only keep 1 to {meta.k} "
                        f"of them (dump the teacher again for a larger k)")
    columns = temperature_columns(meta.temperatures, temperatures, where)
    splits = meta.splits if split == "all" else [split]
    for name in splits:
        if name not in meta.positions:
            raise UserError(f"--split {name}: {where} has no {name!r} split (it has {', '.join(meta.splits)})")
    provenance = {key: value for key, value in meta.provenance.items() if key != "parts"}
    provenance["sliced_from"] = _source_record(source)
    sliced = dataclasses.replace(meta, k=k, temperatures=tuple(meta.temperatures[j] for j in columns),
                                 positions={name: meta.positions[name] for name in splits}, stats={}, complete=False,
                                 provenance=provenance)
    return sliced, columns


def _source_record(source: LogitStore) -> dict[str, Any]:
    """What the slice was cut from: the source's shape, creation time and a sha256 of its whole metadata
    (which holds its creation time and statistics, so it tells two dumps of the same settings apart)."""
    stored = source.meta.to_dict()
    return {"location": source.location, "k": source.meta.k, "temperatures": list(source.meta.temperatures),
            "positions": dict(source.meta.positions), "created_at": source.meta.created_at,
            "meta_sha256": hashlib.sha256(json.dumps(stored, sort_keys=True).encode("utf-8")).hexdigest()}
