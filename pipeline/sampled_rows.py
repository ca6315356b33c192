"""Sampled teacher rows: per position, N ids drawn from the teacher's softmax(z / T_s), kept as counts.

Random-sampling distillation (Anshumann et al., ACL 2025, "Sparse Logit Sampling"): the soft target
count_i / N is an unbiased estimate of the teacher's distribution q_Ts, so the expected cross-entropy
against it, and the expected gradient, equal full-vocabulary distillation at T_s. A row holds:

    ids     [n, w] int64  the distinct drawn ids, ascending, then padding: distinct ids not drawn in the row
    counts  [n, w] int64  how many of the N draws gave each id (sum N); 0 marks padding

with w = min(N, V) (no row can have more distinct ids). Every row's ids are a set, as the fused loss
needs (it scatters into them and normalizes over them once each): padding ids weigh 0 and get the
exact gradient q_j - 0 of an id the teacher did not draw. The draws are a pure function of the row's
logits and of (seed, split, position) (`draw_uniforms`), never of the batch, the rank or the run, so a
shard's bytes do not depend on which process or which resume computed it.

Sampling is by inverse CDF over the ids in ascending order: with the N uniforms u sorted, the i-th
draw is the smallest id whose cumulative probability exceeds u_(i). So the draws come out sorted, the
store keeps exactly them as differences along the row (`draw_deltas` [P, N]: no padding, repeats are
zeros; measured the smallest layout, docs/STORE.md section 10), and `validate` can check each draw
against a recomputed CDF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pipeline.dump_spec import MAX_SAMPLES, ROW_KINDS, check_sampled_temperature  # noqa: F401 (re-exported)
from pipeline.errors import UserError
from pipeline.teacher_rows import TeacherRows, teacher_rows_from_logits

SAMPLED_ARRAYS = ("draw_deltas",)
"""The one data array of a sampled store: [P, N], each row's N drawn ids ascending, as differences along
the row (the first column is the smallest id itself)."""
SPLIT_CODES = {"train": 0, "val": 1}
"""Each split's number in the sampling key (docs/STORE.md section 10)."""
# Row chunks of the [n, V] float64 CDF: its size bounds the sampler's temporaries.
CDF_CHUNK_BYTES = 64 * 2**20

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


# ---- the counter-based generator ---------------------------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic): a bijection that scrambles all bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def draw_uniforms(seed: int, split: str, positions: np.ndarray, samples: int) -> np.ndarray:
    """[n, N] float64 uniforms in [0, 1), row r a pure function of (seed, split, positions[r]).

    SplitMix64 used as a counter-based generator: key = mix(seed + G (split code + 1)), the row's
    state s_p = mix(key + G p), draw i = mix(s_p + G (i + 1)) >> 11, times 2^-53 (G = 0x9E3779B97F4A7C15,
    all arithmetic mod 2^64). Any process computes the same draws for the same position.
    """
    if not 0 <= seed <= _MASK64:
        raise UserError(f"--sample-seed {seed} must be between 0 and 2^64 - 1")
    key = _mix(np.array([(seed + _GOLDEN * (SPLIT_CODES[split] + 1)) & _MASK64], dtype=np.uint64))
    with np.errstate(over="ignore"):
        pos = np.asarray(positions, dtype=np.int64).astype(np.uint64)
        state = _mix(key + pos * np.uint64(_GOLDEN))  # [n]
        counter = (np.arange(1, samples + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]  # [1, N]
        bits = _mix(state[:, None] + counter)  # [n, N]
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# ---- drawing ------------------------------------------------------------------------------------------

def sample_rows_from_logits(logits: torch.Tensor, positions: np.ndarray, split: str, samples: int,
                            temperature: float, seed: int) -> "SampledRows":
    """THE definition of a sampled row: N draws from softmax(logits / T) [n, V] at absolute `positions`
    [n] of `split`, by inverse CDF in float64 on the logits' device; only the draws [n, N] leave it."""
    n, vocab = logits.shape
    if not 1 <= samples <= MAX_SAMPLES:
        raise UserError(f"--samples {samples} must be between 1 and {MAX_SAMPLES}")
    uniforms = torch.from_numpy(np.sort(draw_uniforms(seed, split, positions, samples), axis=1))
    rows = max(1, CDF_CHUNK_BYTES // (8 * vocab))
    parts = [_sample_chunk(logits[i:i + rows], uniforms[i:i + rows].to(logits.device), temperature)
             for i in range(0, n, rows)]
    draws = torch.cat(parts) if parts else torch.zeros(0, samples, dtype=torch.int64)
    ids, counts = _distinct_counts(draws.cpu(), min(samples, vocab))
    return SampledRows(ids, counts, samples, float(temperature), vocab)


def _sample_chunk(logits: torch.Tensor, sorted_uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """[c, N] non-decreasing drawn ids for [c, V] logits and [c, N] sorted uniforms."""
    z = logits.double() / temperature
    if not bool(torch.isfinite(z).all()):
        raise UserError("the teacher produced NaN or infinite logits; its checkpoint is broken")
    cdf = torch.cumsum(torch.exp(z - z.amax(1, keepdim=True)), dim=1)  # [c, V], unnormalized, last >= 1
    # right=True: the first id whose cumulative mass exceeds u * total; an id of probability 0 (equal
    # neighbours in the CDF) can never be drawn.
    drawn = torch.searchsorted(cdf, sorted_uniforms * cdf[:, -1:], right=True)
    return drawn.clamp_max_(cdf.shape[1] - 1)


def _distinct_counts(draws: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-decreasing draws [n, N] -> (ids [n, width]: distinct drawn ids ascending, then distinct undrawn
    ones; counts [n, width], then 0). On the CPU: the reader thread and the dump call it, not the training step."""
    n = draws.shape[0]
    new = torch.ones_like(draws, dtype=torch.bool)
    new[:, 1:] = draws[:, 1:] != draws[:, :-1]
    slot = new.cumsum(1) - 1  # [n, N] the distinct id's index in its row
    ids = torch.zeros(n, width, dtype=torch.int64).scatter_(1, slot, draws)  # equal draws write equal ids
    counts = torch.zeros(n, width, dtype=torch.int64).scatter_add_(1, slot, torch.ones_like(draws))
    real = counts > 0
    return torch.where(real, ids, unused_ids(ids, real)), counts


# ---- the rows -----------------------------------------------------------------------------------------

@dataclass
class SampledRows:
    """n consecutive sampled rows (see the module docstring). Mirrors TeacherRows' interface, so the
    logit store, the batch reader and the objective handle either kind."""

    ids: torch.Tensor
    """[n, w] int64 distinct drawn ids, ascending, then (where counts is 0) distinct ids not drawn in the row."""
    counts: torch.Tensor
    """[n, w] int64 draws per id (each row sums to `samples`), then 0 (padding)."""
    samples: int
    """N, the draws per position."""
    temperature: float
    """T_s, the temperature the ids were drawn at."""
    vocab_size: int
    """V."""

    def __post_init__(self) -> None:
        assert self.ids.shape == self.counts.shape and self.ids.dim() == 2, (self.ids.shape, self.counts.shape)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Ids the store keeps per position (its `k`): the N draws."""
        return self.samples

    @property
    def temperatures(self) -> tuple[float, ...]:
        """(T_s,): the one temperature these rows describe (the store's `temperatures`)."""
        return (self.temperature,)

    def _with(self, ids: torch.Tensor, counts: torch.Tensor) -> "SampledRows":
        return SampledRows(ids, counts, self.samples, self.temperature, self.vocab_size)

    def __getitem__(self, rows: slice) -> "SampledRows":
        return self._with(self.ids[rows], self.counts[rows])

    def to(self, device: torch.device | str) -> "SampledRows":
        """On `device`. Moving from the CPU to an accelerator first drops the columns that are padding in
        every row (`trimmed`), so the loss there works on fewer ids without a device sync."""
        moving_off_cpu = self.ids.device.type == "cpu" and torch.device(device).type != "cpu"
        rows = self.trimmed() if moving_off_cpu else self
        return rows._with(rows.ids.to(device), rows.counts.to(device))

    def trimmed(self) -> "SampledRows":
        """Without the columns that are padding in every row (reads the counts: keep it off the GPU)."""
        width = max(1, int(self.distinct().max())) if len(self) else 1
        return self._with(self.ids[:, :width], self.counts[:, :width])

    @staticmethod
    def cat(parts: list["SampledRows"]) -> "SampledRows":
        first = parts[0]
        for part in parts[1:]:
            assert (part.samples, part.temperature, part.vocab_size) == (first.samples, first.temperature,
                                                                         first.vocab_size)
            assert part.ids.shape[1] == first.ids.shape[1], "concatenate rows before trimming them"
        return first._with(torch.cat([p.ids for p in parts]), torch.cat([p.counts for p in parts]))

    # -- storage: the sorted draws as differences along the row --------------------------------------

    def draws(self) -> torch.Tensor:
        """[n, N] the draws, ascending (each id repeated by its count)."""
        return self.ids.flatten().repeat_interleave(self.counts.flatten()).view(len(self), self.samples)

    def to_stored(self, ids_dtype) -> dict[str, np.ndarray]:
        """{"draw_deltas": [n, N] the sorted draws as differences along the row, in `ids_dtype`}."""
        draws = self.draws().numpy()
        return {"draw_deltas": np.diff(draws, axis=1, prepend=np.zeros((len(draws), 1), draws.dtype)).astype(ids_dtype)}

    @staticmethod
    def from_stored(arrays: dict[str, np.ndarray], samples: int, temperature: float, vocab_size: int) -> "SampledRows":
        """Inverse of `to_stored` (the cumulative sum runs in int64: it never wraps)."""
        draws = torch.from_numpy(np.cumsum(arrays["draw_deltas"].astype(np.int64), axis=1))
        ids, counts = _distinct_counts(draws, min(samples, vocab_size))
        return SampledRows(ids, counts, samples, temperature, vocab_size)

    def problems(self) -> dict[str, bool]:
        """Impossible stored values (for `LogitStore.verify`): each a description -> whether it occurs.
        (Stored draws are ascending and number N by construction; only their range can be wrong.)"""
        return {"ids outside the vocabulary": bool(((self.ids < 0) | (self.ids >= self.vocab_size)).any())}

    def distinct(self) -> torch.Tensor:
        """[n] distinct ids per row."""
        return (self.counts > 0).sum(1)

    # -- what the loss reads ----------------------------------------------------------------------

    def at_temperature(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids [n, w'], log(count / N) [n, w'] float32, tail [n] = 0) for the fused loss at T = T_s, w' the
        most distinct ids of any row (on the CPU; the width `to` left on an accelerator).

        Padding (ids not drawn, see the module docstring) gets log-probability -inf, weight 0. Reads no
        tensor value back from an accelerator (the loss's no-sync rule). At any other T: a UserError
        naming --temperature.
        """
        check_sampled_temperature(self.temperature, temperature, "--temperature")
        rows = self.trimmed() if self.ids.device.type == "cpu" else self  # (`to` trimmed rows it moved off the CPU)
        return rows.loss_targets()

    def loss_targets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`at_temperature`'s result at this width, from tensor operations only (no host read)."""
        logp = torch.log(self.counts.float() / self.samples)  # log 0 = -inf for padding
        return self.ids, logp, torch.zeros(len(self), dtype=torch.float32, device=self.ids.device)


def unused_ids(ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[n, w] ids for the padding slots: in padding slot j (counting from 0 after a row's d drawn ids),
    the j-th smallest id not drawn in that row. It is at most d + j <= w - 1 < V, so candidates 0..w-1 do."""
    n, width = ids.shape
    candidates = torch.arange(width, device=ids.device)
    taken = torch.zeros(n, width + 1, dtype=torch.bool, device=ids.device)  # column w: ids >= w, ignored
    taken.scatter_(1, torch.where(real & (ids < width), ids, width), True)
    # Free candidates first, ascending: sort by (taken, id).
    order = torch.argsort(taken[:, :width].to(torch.int64) * width + candidates, dim=1)
    drawn = real.sum(1, keepdim=True)  # [n, 1]
    j = (torch.arange(width, device=ids.device)[None, :] - drawn).clamp(0, width - 1)  # padding slot index
    return order.gather(1, j)


# ---- validation: the same draws again ----------------------------------------------------------------

def check_draws(stored: SampledRows, logits: torch.Tensor, split: str, position: int, seed: int,
                tolerance: float, where: str) -> tuple[list[str], float]:
    """(problems, largest distance) of one stored sampled row against the teacher's float32 logits [V].

    Redraws the row's sorted uniforms u (same seed, split and position) and checks each stored draw,
    in ascending id order, against the recomputed CDF F: draw i with id j needs F(j - 1) <= u_i < F(j).
    A recompute in another batch shape moves F by float noise (and a bf16 dump by more), so a draw
    may sit just outside its interval: the distance max(F(j - 1) - u_i, u_i - F(j), 0) must stay
    within `tolerance` (validate's bound on a change of summed probabilities, Tolerance.tail).
    """
    real = stored.counts[0] > 0
    draws = stored.ids[0][real].repeat_interleave(stored.counts[0][real])  # [N] ascending
    if draws.numel() != stored.samples:
        return [f"{where}: the counts sum to {draws.numel()}, not {stored.samples}"], math.inf
    u = torch.from_numpy(np.sort(draw_uniforms(seed, split, np.array([position]), stored.samples)[0]))
    probs = torch.softmax(logits.double() / stored.temperature, dim=-1)  # [V]
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(probs, 0)])  # F(j - 1) = cdf[j]
    low, high = cdf[draws], cdf[draws + 1]
    distance = float(torch.clamp(torch.maximum(low - u, u - high), min=0.0).max())
    if distance > tolerance:
        return [f"{where}: the stored draws are not the teacher's at seed {seed} (a draw lies {distance:.3g} "
                f"outside its id's interval of the cumulative distribution)"], distance
    return [], distance


# ---- what the logit store needs to know about sampled rows ------------------------------------------

SAMPLED_LAYOUT = ("row p = teacher's distribution of token p+1, sampled: draws = cumsum(draw_deltas, axis=1) are "
                  "`samples` ids drawn from softmax(z / temperatures[0]), ascending; target = count of each id / "
                  "samples; see docs/STORE.md section 10")


def sampled_dtypes(vocab_size: int) -> dict[str, str]:
    """numpy dtype names of a sampled store's data arrays."""
    from pipeline.token_store import smallest_uint_dtype

    return {"draw_deltas": smallest_uint_dtype(vocab_size).name}


def distinct_stats(delta_blocks) -> dict[str, float]:
    """{"mean", "max"} distinct ids per position over blocks of stored draw deltas [n, N] (the store's stats):
    a row's first draw and each nonzero difference start a new id."""
    total, positions, most = 0, 0, 0
    for deltas in delta_blocks:
        deltas = np.asarray(deltas)
        distinct = (deltas[:, 1:] != 0).sum(1) + 1
        total, positions = total + int(distinct.sum()), positions + len(distinct)
        most = max(most, int(distinct.max(initial=0)))
    return {"mean": total / max(positions, 1), "max": most}


def describe(meta) -> str:
    """The summary's `distribution` line for a sampled store's metadata (a LogitStoreMeta)."""
    return (f"sampled: {meta.samples} draws per position from softmax(z / {meta.temperatures[0]:g}) over "
            f"{meta.vocab_size:,} ids (seed {meta.sample_seed}), target count / {meta.samples}; students train "
            f"at T = {meta.temperatures[0]:g} only")


def row_maker(meta, split: str) -> Callable[[torch.Tensor, np.ndarray], "TeacherRows | SampledRows"]:
    """(logits [n, V], absolute positions [n] of `split`) -> the rows a store with metadata `meta`
    (a LogitStoreMeta) keeps: the dump's one switch between the row kinds."""
    if meta.rows == "sampled":
        return lambda logits, positions: sample_rows_from_logits(logits, positions, split, meta.samples,
                                                                 meta.temperatures[0], meta.sample_seed)
    return lambda logits, positions: teacher_rows_from_logits(logits, meta.k, meta.temperatures)
