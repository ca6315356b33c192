"""`pipeline validate`: is this logit store intact, complete, made from these tokens, and (optionally)
really this teacher's output? Recomputes sampled positions with the teacher to check the stored values."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint import file_sha256, load_model
from pipeline.config import check_device_name
from pipeline.distributed import DistContext, resolve_device
from pipeline.dumping import owned_logits
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
from pipeline.sampled_rows import check_draws
from pipeline.teacher_rows import TeacherRows
from pipeline.teacher_windows import owner
from pipeline.token_store import TokenStore

# Stored scores are float16: relative error <= 2^-11, so a log-probability at T is off by at most
# |score| * 2^-11 / T; we allow that plus float32 noise from a different batch composition.
SCORE_REL_TOL, ABS_TOL = 2.0 ** -11, 2e-3
# What the dump's precision (LogitStoreMeta.precision) adds: a bound, in nats, on the spread
# max_i dz_i - min_i dz_i of its logits' deviation dz from float32 logits; every |d log p| at T is
# within spread / T. benchmarks/bench_dump_precision.py (a 2-layer teacher trained on the CPU, bf16
# autocast) measured spreads up to 0.077 with the float32 head and 0.085 with a bf16 head; we allow
# about 3x that, since bigger, longer-trained teachers round more (docs/STORE.md section 5).
LOGIT_SPREAD_TOL = {"fp32": 0.0, "bf16-autocast-fp32-head": 0.25, "bf16-autocast": 0.3, "unknown": 0.3}


@dataclass(frozen=True)
class Tolerance:
    """How far stored values may be from a float32 recompute, for a store of a given precision."""

    spread: float
    """LOGIT_SPREAD_TOL of the store's precision."""

    @classmethod
    def of(cls, precision: str) -> "Tolerance":
        return cls(LOGIT_SPREAD_TOL[precision])

    def logp(self, scores: torch.Tensor, temperature: float) -> torch.Tensor:
        """Allowed |d log p| at T for entries with these (float32 recompute) scores."""
        return scores.abs() * SCORE_REL_TOL / temperature + ABS_TOL + self.spread / temperature

    def tie(self, temperature: float) -> float:
        """How far above the lowest stored id an unstored id may rank (each moves by <= spread / T)."""
        return ABS_TOL + 2 * self.spread / temperature

    def tail(self, temperature: float) -> float:
        """Allowed |d tail mass|: each stored probability moves by a factor of at most exp(spread / T)."""
        return ABS_TOL + math.expm1(self.spread / temperature)


@dataclass
class ValidateConfig:
    store: str
    tokens: str
    checkpoint: str | None = None
    sample: int = 64
    """Positions per split to recompute with the teacher."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.sample < 1:
            raise UserError(f"--sample must be >= 1 (positions per split to recompute), got {self.sample}")
        check_device_name(self.device)


def run(config: ValidateConfig) -> dict[str, Any]:
    store = LogitStore.open(config.store, require_complete=False, option="STORE", check_files=False)
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
    result = {"positions_recomputed": 0, "largest_logp_error": None, "precision": store.meta.precision}
    if config.checkpoint and not problems:
        found, result["positions_recomputed"], result["largest_logp_error"] = _recompute(store, tokens, config)
        problems += found
        result["deviation"] = (f"largest distance of a draw from its id's CDF interval {result['largest_logp_error']:.2g}"
                               if store.meta.rows == "sampled" else
                               f"largest |d log p| {result['largest_logp_error']:.4f} nats")
    return {**result, "problems": problems, "ok": not problems}


def _recompute(store: LogitStore, tokens: TokenStore, config: ValidateConfig) -> tuple[list[str], int, float]:
    """(problems, positions checked, largest deviation seen) for randomly chosen positions of every split:
    |d log p| for top-k rows, a draw's distance from its id's CDF interval for sampled rows."""
    meta = store.meta
    if file_sha256(config.checkpoint) != meta.teacher.get("checkpoint_sha256"):
        return [f"--checkpoint {config.checkpoint} is not the teacher this store was dumped from (sha256 differs)"], 0, 0.0
    model, _ = load_model(config.checkpoint)
    rng = np.random.default_rng(config.seed)
    tolerance, device = Tolerance.of(meta.precision), resolve_device(config.device, DistContext())
    problems, checked, largest = [], 0, 0.0
    for split in meta.splits:
        ids = tokens.read(split)
        for position in sorted(rng.choice(ids.size, size=min(config.sample, ids.size), replace=False).tolist()):
            stored, where = store.read_rows(split, position, position + 1), f"{split} position {position}"
            logits = recompute(model, ids, position, meta.context, meta.stride, device)
            found, error = (check_draws(stored, logits, split, position, meta.sample_seed,
                                        tolerance.tail(meta.temperatures[0]), where)  # the same draws again
                            if meta.rows == "sampled" else compare(stored, logits, tolerance, where))
            problems, checked, largest = problems + found, checked + 1, max(largest, error)
    return problems, checked, largest


@torch.inference_mode()
def recompute(model, ids: np.ndarray, position: int, context: int, stride: int, device: torch.device) -> torch.Tensor:
    """The teacher's float32 logits [V] at one position, from the window that owns it (as the dump ran it)."""
    window = dataclasses.replace(owner(position, context, stride, ids.size), own_lo=position, own_hi=position + 1)
    return owned_logits(model, ids, [window], device, None)[0].cpu()


def compare(stored: TeacherRows, logits: torch.Tensor, tolerance: Tolerance, where: str) -> tuple[list[str], float]:
    """(problems, largest |d log p|) of one stored row against the teacher's float32 logits [V] there."""
    ids = stored.ids[0]  # [k]
    scores = logits - logits.max()  # [V], what the store keeps (rounded to float16) for its ids
    outside = torch.ones(logits.numel(), dtype=torch.bool).index_fill_(0, ids, False)
    problems, largest = [], 0.0
    for temperature in stored.temperatures:
        _, logp_s, tail_s = stored.at_temperature(temperature)  # [1, k], [1]
        logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # [V]
        # Each stored id's log-probability: near-ties may swap order, so compare by id, not by rank.
        error = (logp_s[0].double() - logp[ids]).abs()  # [k]
        largest = max(largest, float(error.max()))
        tail = 1.0 - float(logp[ids].exp().sum())  # the teacher's mass outside the *stored* ids
        if (error > tolerance.logp(scores[ids], temperature)).any():
            problems.append(f"{where}: stored log-probabilities at T={temperature:g} differ from the teacher's "
                            f"(by up to {float(error.max()):.4f} nats)")
        # The stored ids must be a top k: nothing left out may rank clearly above the lowest one kept.
        elif outside.any() and float(logp[outside].max() - logp[ids].min()) > tolerance.tie(temperature):
            problems.append(f"{where}: stored top-k ids differ from the teacher's")
        elif abs(float(tail_s[0]) - tail) > tolerance.tail(temperature):
            problems.append(f"{where}: stored tail mass at T={temperature:g} differs from the teacher's")
    return problems[:1], largest
