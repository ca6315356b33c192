"""One definition of a "teacher row": the top-k of a next-token distribution plus what the rest weighs.

A row describes the teacher's distribution softmax(z / T) over the full vocabulary V at one token
position, stored T-independently:

    ids            [n, k] int64    the k largest logits' ids, by descending logit (T never changes it)
    scores         [n, k] float16  z_i - max(z) for those ids (<= 0, first is 0, descending)
    log_normalizer [n, nT] float32 c_T = logsumexp_V((z - max z) / T) for each listed T
    tail_mass      [n, nT] float32 probability outside the top k at each listed T

so that log softmax(z / T)_i = scores_i / T - c_T for every stored i. At a listed T that is exact (up
to the float16 rounding of the scores); at any other T the ranking and the *relative* log-probabilities
are still exact, but c_T and the tail must be estimated from the stored data (`_TailBounds` below;
docs/STORE.md states the guarantee). The dump writes rows with `teacher_rows_from_logits` and online
distillation calls the same function, so stored and online targets cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.dump_spec import DEFAULT_TEMPERATURES, check_temperatures  # noqa: F401 (re-exported)
from pipeline.errors import UserError

# log of the smallest normal float32: stands in for a stored tail that underflowed to 0.
_LOG_TINY = math.log(torch.finfo(torch.float32).tiny)


@dataclass
class TeacherRows:
    """n consecutive rows of a teacher's top-k distribution (see the module docstring)."""

    ids: torch.Tensor
    """[n, k] int64 token ids, by descending teacher logit."""
    scores: torch.Tensor
    """[n, k] float16 z_i - max(z): <= 0, first 0, descending."""
    log_normalizer: torch.Tensor
    """[n, nT] float32 c_T over the full vocabulary, one column per temperature."""
    tail_mass: torch.Tensor
    """[n, nT] float32 probability outside the top k, one column per temperature."""
    temperatures: tuple[float, ...]
    """The listed temperatures, in column order."""
    vocab_size: int
    """V, the size of the full distribution (needed to bound the tail at unlisted T)."""

    def __post_init__(self) -> None:
        self.temperatures = tuple(float(t) for t in self.temperatures)
        n, k = self.ids.shape
        assert self.scores.shape == (n, k), f"scores {tuple(self.scores.shape)} != ids {(n, k)}"
        n_t = len(self.temperatures)
        assert self.log_normalizer.shape == (n, n_t) and self.tail_mass.shape == (n, n_t)
        assert 1 <= k <= self.vocab_size or n == 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def __getitem__(self, rows: slice) -> "TeacherRows":
        """Rows `rows` (a slice) as views."""
        return TeacherRows(self.ids[rows], self.scores[rows], self.log_normalizer[rows],
                           self.tail_mass[rows], self.temperatures, self.vocab_size)

    def to(self, device: torch.device | str) -> "TeacherRows":
        return TeacherRows(self.ids.to(device), self.scores.to(device), self.log_normalizer.to(device),
                           self.tail_mass.to(device), self.temperatures, self.vocab_size)

    @staticmethod
    def cat(parts: list["TeacherRows"]) -> "TeacherRows":
        """Concatenate rows that share k, temperatures and vocabulary (e.g. reads across shards)."""
        first = parts[0]
        for part in parts[1:]:
            assert (part.k, part.temperatures, part.vocab_size) == (first.k, first.temperatures, first.vocab_size)
        return TeacherRows(*(torch.cat([getattr(p, name) for p in parts])
                             for name in ("ids", "scores", "log_normalizer", "tail_mass")),
                           first.temperatures, first.vocab_size)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """CPU numpy arrays keyed by field name (ids stay int64; the store narrows them)."""
        return {name: getattr(self, name).detach().cpu().numpy()
                for name in ("ids", "scores", "log_normalizer", "tail_mass")}

    @staticmethod
    def from_numpy(ids: np.ndarray, scores: np.ndarray, log_normalizer: np.ndarray, tail_mass: np.ndarray,
                   temperatures, vocab_size: int) -> "TeacherRows":
        return TeacherRows(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
                           torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float16)),
                           torch.from_numpy(np.ascontiguousarray(log_normalizer, dtype=np.float32)),
                           torch.from_numpy(np.ascontiguousarray(tail_mass, dtype=np.float32)),
                           tuple(temperatures), int(vocab_size))

    def to_stored(self, ids_dtype) -> dict[str, np.ndarray]:
        """The arrays a logit store keeps: ids narrowed to `ids_dtype`, scores as `encode_scores` deltas."""
        data = self.to_numpy()
        return {"ids": data["ids"].astype(ids_dtype), "score_deltas": encode_scores(data["scores"]),
                "log_normalizer": data["log_normalizer"], "tail_mass": data["tail_mass"]}

    @staticmethod
    def from_stored(arrays: dict[str, np.ndarray], temperatures, vocab_size: int) -> "TeacherRows":
        """Inverse of `to_stored`."""
        return TeacherRows.from_numpy(arrays["ids"], decode_scores(arrays["score_deltas"]), arrays["log_normalizer"],
                                      arrays["tail_mass"], temperatures, vocab_size)

    def problems(self) -> dict[str, bool]:
        """Impossible stored values (for `LogitStore.verify`): each a description -> whether it occurs."""
        scores, tail = self.scores.float(), self.tail_mass
        return {"ids outside the vocabulary": bool(((self.ids < 0) | (self.ids >= self.vocab_size)).any()),
                "scores not descending from 0": bool((scores[:, 0] != 0).any() or (scores.diff(dim=1) > 0).any()),
                "tail_mass outside [0, 1]": bool(((tail < 0) | (tail > 1)).any()),
                "log_normalizer below 0": bool((self.log_normalizer < 0).any())}

    def column(self, temperature: float) -> int | None:
        """Index of a listed temperature (relative tolerance 1e-6), or None."""
        for j, t in enumerate(self.temperatures):
            if math.isclose(t, temperature, rel_tol=1e-6):
                return j
        return None

    def at_temperature(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids [n, k] int64, log-probabilities [n, k] float32, tail mass [n] float32) at T.

        Exact at a listed T. At any other T the log-probabilities share one estimated c_T (their
        differences and the ranking stay exact) that lies within `log_normalizer_bounds`: the middle of
        them below the largest listed T, the upper one above it (docs/STORE.md); the tail is then
        1 - sum(exp(logp)), so the k + 1 outcomes sum to 1.
        """
        if not (math.isfinite(temperature) and temperature > 0):
            raise UserError(f"temperature {temperature} must be a finite number > 0")
        scaled = self.scores.float() / temperature  # [n, k]
        j = self.column(temperature)
        if j is not None:
            return self.ids, scaled - self.log_normalizer[:, j:j + 1], self.tail_mass[:, j]
        low, high = self.log_normalizer_bounds(temperature)  # [n] each
        # Above every listed T the upper bound is the chord from f(0) = log(V - k), nearly exact there
        # (f curves by ~Var(tail scores) * b^2 / 2 only); elsewhere the middle is off by <= half the width.
        c = high if temperature > max(self.temperatures) else 0.5 * (low + high)
        log_top = torch.logsumexp(scaled, dim=-1)  # [n] log of the (exact) top-k part of exp(c_T)
        return self.ids, scaled - c[:, None], (-torch.expm1(log_top - c)).clamp(0.0, 1.0)

    def log_normalizer_bounds(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Guaranteed [lower, upper] bounds ([n] each) on c_T at any T (equal at listed T)."""
        j = self.column(temperature)
        if j is not None:
            return self.log_normalizer[:, j], self.log_normalizer[:, j]
        bounds = _TailBounds(self, 1.0 / temperature)
        low, high = bounds.bounds()
        return torch.logaddexp(bounds.log_top, low), torch.logaddexp(bounds.log_top, high)


class _TailBounds:
    """Bounds on f(b) = log sum_{i outside top-k} exp(b * s_i), b = 1/T, from the stored data alone.

    Facts used (s_i = z_i - max z, so every tail s_i <= m, the k-th stored score):
      f(0) = log(V - k);  f(b_j) = log(tail_j) + c_j at each listed b_j = 1/T_j;
      f is convex in b (a log-sum-exp of linear functions) and f'(b) <= m (a weighted mean of tail s_i).
    Between two known points the chord is an upper bound and the neighbouring chords, extended, are
    lower bounds; beyond the largest b the last chord is a lower bound and slope m an upper bound.
    Everywhere f(b) <= log(V - k) + b * m. c_T = logaddexp(log_top, f) turns these into bounds on c_T.
    """

    def __init__(self, rows: TeacherRows, beta: float):
        self.rows, self.beta = rows, beta
        scores = rows.scores.float()  # [n, k]
        self.log_top = torch.logsumexp(scores * beta, dim=-1)  # [n] exact top-k part of exp(c_T)
        self.m = scores[:, -1]  # [n] the k-th score bounds every tail score
        self.n_tail = rows.vocab_size - rows.k

    def _known_points(self) -> tuple[list[float], torch.Tensor]:
        """Known betas ascending (0 first) and f at them, [n, L+1]."""
        order = sorted(range(len(self.rows.temperatures)), key=lambda j: 1.0 / self.rows.temperatures[j])
        betas = [0.0] + [1.0 / self.rows.temperatures[j] for j in order]
        tail = self.rows.tail_mass[:, order].float()
        f = torch.log(tail).clamp_min(_LOG_TINY) + self.rows.log_normalizer[:, order].float()
        start = torch.full_like(f[:, :1], math.log(self.n_tail))
        return betas, torch.cat([start, f], dim=1)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.rows)
        if self.n_tail == 0:  # k = V: there is no tail at any temperature
            empty = torch.full((n,), -math.inf, device=self.m.device)
            return empty, empty
        betas, f = self._known_points()
        slopes = [(f[:, i + 1] - f[:, i]) / (betas[i + 1] - betas[i]) for i in range(len(betas) - 1)]
        b, last = self.beta, len(betas) - 1
        ceiling = math.log(self.n_tail) + self.m * b  # every tail term is <= exp(b * m)
        if b >= betas[last]:
            low = f[:, last] + slopes[-1] * (b - betas[last])
            high = torch.minimum(f[:, last] + self.m * (b - betas[last]), ceiling)
            return torch.minimum(low, high), high
        i = max(j for j in range(last) if betas[j] <= b)  # b lies in [betas[i], betas[i + 1])
        high = torch.minimum(f[:, i] + slopes[i] * (b - betas[i]), ceiling)
        right_slope = slopes[i + 1] if i + 1 < len(slopes) else self.m
        low = f[:, i + 1] + right_slope * (b - betas[i + 1])
        if i >= 1:
            low = torch.maximum(low, f[:, i] + slopes[i - 1] * (b - betas[i]))
        return torch.minimum(low, high), high


def encode_scores(scores: np.ndarray) -> np.ndarray:
    """float16 [n, k] -> uint16 [n, k] wrapping differences of the bit patterns along k (the stored form).

    Sorted non-positive float16s have increasing bit patterns, so the differences are small numbers.
    """
    bits = np.ascontiguousarray(scores, dtype=np.float16).view(np.uint16)
    return np.diff(bits, axis=1, prepend=np.zeros((bits.shape[0], 1), np.uint16))


def decode_scores(deltas: np.ndarray) -> np.ndarray:
    """Inverse of `encode_scores`: cumulative sum in uint16 (wrapping), reread as float16."""
    return np.cumsum(deltas, axis=1, dtype=np.uint16).view(np.float16)


def teacher_rows_from_logits(logits: torch.Tensor, k: int, temperatures=DEFAULT_TEMPERATURES) -> TeacherRows:
    """THE definition of a row: top-k of `logits` [n, V] on their device, all arithmetic in float32.

    The tail is summed directly over the ids outside the top k (not 1 - sum(top k), which cancels
    to noise when the top k holds almost all the mass), and c_T = log(top-k part + tail part).
    Peak memory is about three [n, V] float32 buffers: call it on slices of a large batch.
    """
    temps = check_temperatures(temperatures)
    if logits.dim() != 2:
        raise ValueError(f"logits must be [n, V], got shape {tuple(logits.shape)}")
    vocab = int(logits.shape[1])
    if not 1 <= k <= vocab:
        raise UserError(f"--top-k {k} must be between 1 and the vocabulary size {vocab}")
    z = logits.float()  # [n, V]
    top, ids = torch.topk(z, k, dim=-1, largest=True, sorted=True)  # [n, k] each, descending
    if torch.isnan(top).any() or not torch.isfinite(top[:, 0]).all():  # topk ranks NaN first
        raise UserError("the teacher produced NaN or infinite logits; its checkpoint is broken")
    scores = top - top[:, :1]  # [n, k] <= 0, first 0
    shifted = z - top[:, :1]  # [n, V] <= 0, so exp below never overflows
    powers = torch.empty_like(shifted)
    columns_c, columns_tail = [], []
    for t in temps:
        # exp((z - max z) / T) in one reused buffer; zeroing the top-k entries leaves exactly the tail
        # terms, summed directly. Terms below e^-87 underflow to 0, far below float32 resolution of c_T.
        torch.mul(shifted, 1.0 / t, out=powers).exp_().scatter_(-1, ids, 0.0)
        tail_sum = powers.sum(dim=-1)  # [n]
        top_sum = torch.exp(scores / t).sum(dim=-1)  # [n], >= 1 (the top score is 0)
        columns_c.append(torch.log(top_sum + tail_sum))
        columns_tail.append(tail_sum / (top_sum + tail_sum))
    return TeacherRows(ids, scores.half(), torch.stack(columns_c, dim=1), torch.stack(columns_tail, dim=1),
                       temps, vocab)
