"""`pipeline validate`: is this logit store intact, complete, made from these tokens, and (optionally)
really this teacher's output? Recomputes sampled positions with the teacher to check the stored values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint import file_sha256, load_model
from pipeline.dumping import compute_rows
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
from pipeline.teacher_windows import owner
from pipeline.token_store import TokenStore

# Stored scores are float16: relative error <= 2^-11, so a log-probability at T is off by at most
# |score| * 2^-11 / T; we allow that plus float32 noise from a different batch composition.
SCORE_REL_TOL, ABS_TOL = 2.0 ** -11, 2e-3


@dataclass
class ValidateConfig:
    store: str
    tokens: str
    checkpoint: str | None = None
    sample: int = 64
    seed: int = 0
    device: str = "cpu"


def run(config: ValidateConfig) -> dict[str, Any]:
    store = LogitStore.open(config.store, require_complete=False, option="STORE")
    tokens = TokenStore.open(config.tokens)
    problems: list[str] = []
    if not store.meta.complete:
        problems.append("the store is incomplete (an interrupted dump); finish it with `pipeline dump-teacher ... --resume`")
    for split in store.meta.splits:
        try:
            store.check_matches(tokens, split)
        except UserError as error:
            problems.append(str(error))
    problems += store.verify()
    checked = 0
    if config.checkpoint and not problems:
        checked, found = _recompute(store, tokens, config)
        problems += found
    return {"problems": problems, "positions_recomputed": checked, "ok": not problems}


def _recompute(store: LogitStore, tokens: TokenStore, config: ValidateConfig) -> tuple[int, list[str]]:
    meta = store.meta
    if file_sha256(config.checkpoint) != meta.teacher.get("checkpoint_sha256"):
        return 0, [f"--checkpoint {config.checkpoint} is not the teacher this store was dumped from (sha256 differs)"]
    model, _ = load_model(config.checkpoint)
    rng = np.random.default_rng(config.seed)
    problems, checked = [], 0
    for split in meta.splits:
        ids = tokens.read(split)
        for position in sorted(rng.choice(ids.size, size=min(config.sample, ids.size), replace=False).tolist()):
            window = owner(position, meta.context, meta.stride, ids.size)
            fresh = compute_rows(model, ids, [window], meta.k, meta.temperatures, 1, torch.device(config.device), None)
            fresh = fresh[position - window.own_lo:position - window.own_lo + 1]
            problems += _compare(store.read_rows(split, position, position + 1), fresh, f"{split} position {position}")
            checked += 1
    return checked, problems


def _compare(stored, fresh, where: str) -> list[str]:
    for temperature in stored.temperatures:
        ids_s, logp_s, tail_s = stored.at_temperature(temperature)
        ids_f, logp_f, tail_f = fresh.at_temperature(temperature)
        # Near-ties may swap order under float16: compare the distribution over ids, not positions.
        order_s, order_f = ids_s[0].argsort(), ids_f[0].argsort()
        if not torch.equal(ids_s[0][order_s], ids_f[0][order_f]):
            if (logp_f[0, -1] - logp_s[0, -1]).abs() > ABS_TOL:  # not just a tie at the k-th place
                return [f"{where}: stored top-k ids differ from the teacher's"]
            continue
        tolerance = fresh.scores.float().abs()[0][order_f] * SCORE_REL_TOL / temperature + ABS_TOL
        if ((logp_s[0][order_s] - logp_f[0][order_f]).abs() > tolerance).any():
            return [f"{where}: stored log-probabilities at T={temperature:g} differ from the teacher's"]
        if abs(float(tail_s[0] - tail_f[0])) > ABS_TOL:
            return [f"{where}: stored tail mass at T={temperature:g} differs from the teacher's"]
    return []
