"""The superstill training loss: L = w1 * T^2 * l_t + w2 * l_d, fused into one pass over row chunks.

Rows are flattened batch*time positions. For each row the student has logits z [V]; the teacher store
holds, at temperature T, its top-k ids (distinct, by descending probability), log p_k = log softmax(z_teacher
/ T) at those ids, and p_tail, the teacher's mass outside the top-k (exactly 0 when k = V).

- l_d, the data term: cross-entropy of softmax(z) against the next-token id (F.cross_entropy).
- l_t, the teacher term: cross-entropy of the softened student q = softmax(z / T) against a target built
  from the stored top-k. Two ways to treat the mass the store dropped (`tail`):

  "bucket" (default): the teacher becomes a distribution over k + 1 outcomes, the k ids plus one "any
  other token" bucket of mass p_tail, scored against the student's probabilities of the same k ids plus
  its own mass outside them, q_tail = sum of q over the ids not in the top-k:
      l_t = -sum_k p_k log q_k - p_tail log q_tail.
  Nothing is renormalized, so the student is still told how much mass belongs *outside* the top-k, and
  with k = V (p_tail = 0) this is exactly full-vocabulary distillation -sum_v p_v log q_v.

  "renorm": standard Hinton KD restricted to the top-k support: the teacher's k probabilities are
  renormalized to sum to 1 and scored against the student's (not renormalized) log q_k:
      l_t = -sum_k (p_k / sum_j p_j) log q_k.
  The student is pushed to put all its softened mass on the k ids and gets no signal about the rest.

  Why bucket is the default: at high T the teacher's mass outside its top-k is large (97% at T = 6 for the
  demo's teacher, k = 64) and renorm moves all of it onto the k ids. `pipeline experiment
  tail-and-temperature` measured held-out perplexity 21,252 after epoch 1 with renorm at T = 6 against 175
  with bucket (docs/LOSS.md).

Both terms are means over the rows whose target is not `ignore_index` (-100, as in F.cross_entropy);
ignored rows get a zero gradient. A batch with no valid rows gives 0 (not nan) and a zero gradient.

Implementation: a `torch.autograd.Function` walks the rows in chunks whose temporaries stay small (64 MB
in all, see CHUNK_BYTES), computes the softmaxes, the loss terms and the closed-form gradient w.r.t. the
logits, and writes the gradient into one [N, V] buffer in the logits' dtype; backward only scales it by
grad_output. No dense teacher distribution over V and no second autograd pass over [N, V] exist.
Closed forms per valid row (M valid rows), with zT = z / T, q = softmax(zT), s = softmax(z) (the
student's; p is always the teacher's):

  bucket:  S = sum_k p_k + p_tail;  dl_t/dzT_j = S q_j - p_j (j in top-k),  q_j (S - p_tail / q_tail) (else)
  renorm:  r_k = p_k / sum p;       dl_t/dzT_j = q_j - r_j   (j in top-k),  q_j                     (else)
  data:    dl_d/dz_j = s_j - [j = target]
  dL/dz = (w1 T / M) dl_t/dzT + (w2 / M) dl_d/dz       (the T^2 of the loss times the 1/T of zT = z/T)

Renorm is bucket with p_tail = 0 and S = 1, so both share one path. Sampled teacher rows (count / N over
the distinct drawn ids, undrawn padding ids at weight 0, tail 0; pipeline/sampled_rows.py) are that case
too: the gradient is q_j - count_j / N for every id, cross-entropy against the empirical distribution. Off the top-k the student is handled
through its *tail softmax* u = softmax(zT over the non-top-k ids), q_j = q_tail u_j, which gives both
tail quantities in log space without ever dividing by a q_tail that may underflow:

  log q_tail = lse_out - lse_t,   lse_out = logsumexp(zT over non-top-k) = max(zT over non-top-k) - log max u,
  lse_t = logsumexp(zT_k..., lse_out) over k + 1 values,   off-top-k gradient = w_t (S q_tail - p_tail) u_j,

(max u = 1 / sum exp(zT - max zT) >= 1 / V is never tiny; logsumexp(z) = max z - log max s likewise.)
So every row is exact to float rounding in one pass, with no rows to redo, no clamp, and nothing read
back to the host: a CUDA step never waits for the device (tests/test_losses.py checks this
structurally). The price is a few reductions per chunk that write nothing (maxima; benchmarks/bench_loss.py
measures the whole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.distillation import TAIL_MODES

IGNORE_INDEX = -100
# Bytes of chunk temporaries in all: per row, the dense [V] buffers (the tail softmax u at T != 1; s =
# softmax(z) too without a gradient, else s is written into the gradient rows; float32 copies of z and of
# the gradient rows for bf16/fp16 logits) plus ~SMALL_PER_ID [k]-wide per-row values.
# Why this large: each chunk costs ~10 parallel regions (thread barriers), cheap on an idle machine but a
# scheduler slice (~ms) each when neighbours load the 2 cores. Loss fwd+bwd medians as a ratio to
# F.cross_entropy (N=2048 V=12k / N=4096 V=50k), under such load: 8 MB 2.9x / 3.2x, 16 MB 1.8x / 1.9x,
# 64 MB 1.7x / 0.87x; idle: 4 MB 0.58x / 0.59x (cache reuse), 64 MB 0.82x / 0.68x (measured before the
# four max reductions per chunk that replaced host syncs; they cost ~10-15% of the loss: docs/LOSS.md).
CHUNK_BYTES = 64 * 2**20
SMALL_PER_ID = 8


@dataclass(frozen=True)
class SuperstillLoss:
    """What `superstill_loss` returns."""

    loss: Tensor
    """w1 * T^2 * l_t + w2 * l_d: a scalar, differentiable w.r.t. the logits."""
    teacher_term: Tensor
    """l_t, detached (for logging)."""
    data_term: Tensor
    """l_d, detached (for logging)."""


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The baseline's loss: mean cross-entropy of logits [N, V] against targets [N], in float32 or better."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def superstill_loss(logits: Tensor, targets: Tensor, teacher_ids: Tensor, teacher_logp: Tensor,
                    teacher_tail: Tensor, *, temperature: float, w_teacher: float = 0.6,
                    w_data: float = 0.4, tail: str = "bucket", ignore_index: int = IGNORE_INDEX,
                    chunk_rows: int | None = None, check_values: bool = False) -> SuperstillLoss:
    """The superstill loss (see the module docstring) of student logits [N, V] against targets [N] (int64)
    and the stored teacher: teacher_ids [N, k] int64 (distinct per row), teacher_logp [N, k], teacher_tail [N].

    Computes in float32 (float64 for float64 logits). `chunk_rows` overrides the rows per chunk (the
    result does not depend on it beyond float rounding). Arguments are checked by shape, dtype and device
    only, which costs no device sync; `check_values=True` (a debugging aid, off in training because it
    reads a tensor back to the host) also checks that teacher_tail is 0 where k equals V. Nothing else
    here waits for the device either. The [N, V] gradient is made in forward and scaled in place by
    backward, so a second backward through a retained graph raises (a saved tensor was modified in place).
    """
    _validate(logits, targets, teacher_ids, teacher_logp, teacher_tail, temperature, w_teacher, w_data,
              tail, chunk_rows)
    if check_values:
        _check_values(logits, teacher_ids, teacher_tail, tail)
    spec = _Spec(float(temperature), float(w_teacher), float(w_data), tail, ignore_index, chunk_rows)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, l_t, l_d = _FusedSuperstill.apply(logits, targets, teacher_ids, teacher_logp, teacher_tail,
                                                spec)
    else:
        loss, l_t, l_d, _ = _compute(logits, targets, teacher_ids, teacher_logp, teacher_tail, spec,
                                     want_grad=False)
    return SuperstillLoss(loss, l_t.detach(), l_d.detach())


@dataclass(frozen=True)
class _Spec:
    temperature: float
    w_teacher: float
    w_data: float
    tail: str
    ignore_index: int
    chunk_rows: int | None


class _FusedSuperstill(torch.autograd.Function):
    """Forward computes the loss and its gradient w.r.t. the logits; backward scales that gradient."""

    @staticmethod
    def forward(ctx, logits, targets, teacher_ids, teacher_logp, teacher_tail, spec):
        loss, l_t, l_d, grad = _compute(logits, targets, teacher_ids, teacher_logp, teacher_tail, spec,
                                        want_grad=True)
        # Saved (not a ctx attribute) so autograd frees the [N, V] buffer right after backward, unless
        # the graph is retained, and a leaf's .grad can take it over without a copy.
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(l_t, l_d)
        return loss, l_t, l_d

    @staticmethod
    def backward(ctx, grad_loss, _grad_t, _grad_d):
        (grad,) = ctx.saved_tensors
        # Always scaled, even by 1: testing grad_loss == 1 would read it back to the host (a sync), and
        # the multiply is one pass over [N, V] (benchmarks/bench_loss.py prints its cost). In place, so a
        # later backward through a retained graph fails autograd's saved-tensor version check (a
        # RuntimeError) instead of silently using the scaled buffer.
        return grad.mul_(grad_loss), None, None, None, None, None


def _compute(logits: Tensor, targets: Tensor, teacher_ids: Tensor, teacher_logp: Tensor,
             teacher_tail: Tensor, spec: _Spec, want_grad: bool):
    """(loss, l_t, l_d, grad [N, V] or None): every [N, V] pass happens here, one row chunk at a time."""
    logits = logits.contiguous()
    n, vocab = logits.shape
    plan = _plan(logits, targets, teacher_ids, teacher_logp, teacher_tail, spec)
    grad = torch.empty_like(logits) if want_grad else None
    bufs = _Buffers.for_chunks(n, vocab, teacher_ids.shape[1], plan.dtype, logits, want_grad, spec)
    row_t, row_d = (torch.empty(n, dtype=plan.dtype, device=logits.device) for _ in range(2))
    for start in range(0, n, bufs.rows):
        rows = slice(start, min(start + bufs.rows, n))
        _chunk(logits, teacher_ids, plan, bufs, grad, rows, spec, row_t[rows], row_d[rows])
    l_t = torch.where(plan.valid, row_t, 0.0).sum() * plan.inv_m
    l_d = torch.where(plan.valid, row_d, 0.0).sum() * plan.inv_m
    loss = spec.w_teacher * spec.temperature ** 2 * l_t + spec.w_data * l_d
    return loss, l_t, l_d, grad


@dataclass(frozen=True)
class _Plan:
    """Per-row quantities that need no pass over the student's [N, V] logits, computed once per batch.

    w_t = w1 T / M and w_d = w2 / M on valid rows (0 on ignored rows, which zeroes their gradient) map
    dl_t/dzT and dl_d/dz to dL/dz; the products below are premultiplied to save ops inside the loop.
    """

    dtype: torch.dtype  # compute dtype: float32, or float64 for float64 logits
    valid: Tensor       # [N] bool: target != ignore_index
    inv_m: Tensor       # [] 1 / (number of valid rows), 1 when there are none
    target: Tensor      # [N, 1] int64, ignored rows pointed at id 0 so gathers stay in range
    p_k: Tensor         # [N, k] teacher target on the top-k ids (renorm: renormalized to sum 1)
    p_tail: Tensor      # [N, 1] teacher tail mass (bucket; zeros for renorm)
    w_d: Tensor         # [N, 1] w_d
    w_mass: Tensor      # [N, 1] w_t * S, S = sum_k p_k + p_tail (the teacher mass the gradient sees)
    w_tail: Tensor      # [N, 1] w_t * p_tail
    k_base: Tensor      # [N, k] -w_t * p_k: the teacher's part of the top-k gradient
    neg_w_d: Tensor     # [N, 1] -w_d: the data term's one-hot at the target


def _plan(logits, targets, teacher_ids, teacher_logp, teacher_tail, spec: _Spec) -> _Plan:
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    valid = targets != spec.ignore_index
    inv_m = 1.0 / valid.sum().clamp_min(1).to(dtype)
    p_k = teacher_logp.to(dtype).exp()
    if spec.tail == "bucket":
        p_tail = teacher_tail.to(dtype).unsqueeze(1)
    else:
        p_k = p_k / p_k.sum(1, keepdim=True)
        p_tail = torch.zeros(len(targets), 1, dtype=dtype, device=logits.device)
    weight = valid.to(dtype).unsqueeze(1) * inv_m
    w_t, w_d = weight * (spec.w_teacher * spec.temperature), weight * spec.w_data
    return _Plan(dtype, valid, inv_m, torch.where(valid, targets, 0).unsqueeze(1), p_k, p_tail, w_d,
                 w_t * (p_k.sum(1, keepdim=True) + p_tail), w_t * p_tail, -w_t * p_k, -w_d)


class _Buffers:
    """Chunk temporaries, allocated once per call and reused by every chunk ([rows, V] each).

    main: where softmax(z) (T != 1) or the tail softmax (T = 1) goes and the gradient rows are built: the
    gradient itself for float32/64 logits, a float32 staging copy for bf16/fp16, a scratch row block
    without a gradient. u: the tail softmax at T != 1. z: a float32 copy of bf16/fp16 logits.
    """

    def __init__(self, rows: int, vocab: int, dtype, device, staged: bool, separate_u: bool, copy_z: bool):
        def make(wanted):
            return torch.empty(rows, vocab, dtype=dtype, device=device) if wanted else None
        self.rows = rows
        self.main, self.u, self.z = make(staged), make(separate_u), make(copy_z)

    @staticmethod
    def for_chunks(n: int, vocab: int, k: int, dtype, logits: Tensor, want_grad: bool, spec: _Spec) -> "_Buffers":
        copy_z = logits.dtype != dtype
        staged = copy_z or not want_grad
        separate_u = spec.temperature != 1.0 and k < vocab
        dense = max(1, staged + separate_u + copy_z)
        rows = spec.chunk_rows or CHUNK_BYTES // ((dense * vocab + SMALL_PER_ID * k) * dtype.itemsize)
        rows = max(1, min(n, rows))
        return _Buffers(rows, vocab, dtype, logits.device, staged, separate_u, copy_z)

    def main_rows(self, grad, rows: slice, c: int) -> Tensor:
        return self.main[:c] if self.main is not None else grad[rows]


def _softmax_into(x: Tensor, out: Tensor) -> Tensor:
    # torch.softmax has no out=; the aten op writes into our reused buffer (in place when out is x).
    return torch.ops.aten._softmax.out(x, 1, False, out=out)


@dataclass(frozen=True)
class _RowLogs:
    """One chunk's per-row values in log space, [c, k] or [c, 1]; all exact to float rounding."""

    log_q_k: Tensor     # [c, k] log softmax(zT) at the teacher's ids
    log_q_tail: Tensor  # [c, 1] log of the student's mass at T outside the top-k (-inf when k = V)
    lse: Tensor         # [c, 1] logsumexp(z)
    log_s_k: Tensor     # [c, k] log softmax(z) at the teacher's ids


def _chunk(logits, teacher_ids, plan: _Plan, bufs: _Buffers, grad, rows: slice, spec: _Spec,
           row_t: Tensor, row_d: Tensor) -> None:
    """One row chunk: its loss rows into row_t, row_d [c] and (when grad is given) its gradient rows.

    Each pass over [c, V] is one parallel region (a thread barrier): on a busy 2-core machine their
    count, not just the bytes moved, sets the cost, so there are as few as possible per chunk: the
    scaled copy zT and its max, the tail softmax and its max, the gradient's multiply(-add), and at
    T != 1 also s = softmax(z) and the maxima of z and s.
    """
    z = logits[rows]                                      # [c, V]
    c = z.shape[0]
    if bufs.z is not None:
        z = bufs.z[:c].copy_(z)
    ids, main = teacher_ids[rows], bufs.main_rows(grad, rows, c)
    s = None if spec.temperature == 1.0 else _softmax_into(z, main)        # the student's softmax(z)
    u, lse_out = _tail_softmax(z, ids, bufs.u[:c] if bufs.u is not None else main, spec.temperature)
    logs = _row_logs(z, ids, s, lse_out, spec.temperature)
    p_k, p_tail = plan.p_k[rows], plan.p_tail[rows]
    row_t.copy_(-(p_k * logs.log_q_k).sum(1)
                - torch.where(p_tail > 0, p_tail * logs.log_q_tail, 0.0).squeeze(1))  # no 0 * -inf at k = V
    row_d.copy_((logs.lse - z.gather(1, plan.target[rows])).squeeze(1))
    if grad is not None:
        _gradient_chunk(main, s, u, ids, logs, plan, rows)
        if bufs.main is not None:
            grad[rows].copy_(main)


def _logsumexp(x_max: Tensor, softmax_of_x: Tensor) -> Tensor:
    """logsumexp(x) [c, 1] = max(x) - log max(softmax(x)), given max(x) [c, 1]: one more reduction over
    [c, V] that writes nothing (a logsumexp would redo the exps), exact to float rounding since
    max(softmax(x)) = 1 / sum exp(x - max x) >= 1 / V never underflows."""
    return x_max - softmax_of_x.amax(1, keepdim=True).log()


def _tail_softmax(z: Tensor, ids: Tensor, out: Tensor, temperature: float) -> tuple[Tensor | None, Tensor]:
    """(u, lse_out): u = softmax(z / T) over the ids outside the top-k, 0 on the top-k, written into out
    [c, V], and lse_out = logsumexp(z / T over those ids) [c, 1]; (None, -inf) when k = V (no such ids)."""
    if ids.shape[1] == z.shape[1]:
        return None, z.new_full((z.shape[0], 1), -math.inf)
    z_t = torch.mul(z, 1.0 / temperature, out=out)
    z_t.scatter_(1, ids, -math.inf)
    top = z_t.amax(1, keepdim=True)                        # [c, 1], before the softmax overwrites z_t
    u = _softmax_into(z_t, out)
    return u, _logsumexp(top, u)


def _row_logs(z: Tensor, ids: Tensor, s: Tensor | None, lse_out: Tensor, temperature: float) -> _RowLogs:
    """The log-space row values (see the module docstring): logsumexp(z / T) over the k top-k values and
    the tail's lse_out (k + 1 values per row); logsumexp(z) from s (T != 1) or that same value (T = 1)."""
    inv_t = 1.0 / temperature
    z_k = z.gather(1, ids)                                                 # [c, k]
    lse_t = torch.logsumexp(torch.cat([z_k * inv_t, lse_out], 1), 1, keepdim=True)
    lse = lse_t if s is None else _logsumexp(z.amax(1, keepdim=True), s)
    return _RowLogs(z_k * inv_t - lse_t, lse_out - lse_t, lse, z_k - lse)


def _gradient_chunk(main: Tensor, s: Tensor | None, u: Tensor | None, ids: Tensor, logs: _RowLogs,
                    plan: _Plan, rows: slice) -> None:
    """Gradient rows = w_d (s - onehot(target)) + w_t dl_t/dzT, built in place in `main`.

    Off the top-k, dl_t/dzT_j = (S q_tail - p_tail) u_j (and s_j = q_tail u_j when T = 1).
    """
    q_tail, w_d = logs.log_q_tail.exp(), plan.w_d[rows]
    tail_coefficient = plan.w_mass[rows] * q_tail - plan.w_tail[rows]      # [c, 1]
    if s is not None:
        s.mul_(w_d)
        if u is not None:
            s.addcmul_(u, tail_coefficient)                                # right everywhere but the top-k
    elif u is not None:                                                    # T = 1: u was written into main
        u.mul_(tail_coefficient + w_d * q_tail)
    else:                                                                  # T = 1, k = V: no dense term;
        main.zero_()                                                       # the scatter below sets every id
    # Top-k ids: w_t (S q_k - p_k) + w_d s_k, overwritten; then the data term's one-hot at the target.
    top_k = torch.addcmul(plan.k_base[rows], logs.log_q_k.exp(), plan.w_mass[rows])
    top_k.addcmul_(logs.log_s_k.exp(), w_d)
    main.scatter_(1, ids, top_k)
    main.scatter_add_(1, plan.target[rows], plan.neg_w_d[rows])


def _validate(logits, targets, teacher_ids, teacher_logp, teacher_tail, temperature, w_teacher, w_data,
              tail, chunk_rows) -> None:
    """Programming errors (wrong shapes or arguments) raise ValueError; user input is checked upstream.

    Shapes, dtypes, devices and Python numbers only: nothing here reads a tensor's values (no sync).
    """
    if logits.dim() != 2:
        raise ValueError(f"superstill_loss: logits must be [N, V], got shape {tuple(logits.shape)}")
    n, vocab = logits.shape
    k = teacher_ids.shape[-1] if teacher_ids.dim() == 2 else -1
    expected = {"targets": (targets, (n,)), "teacher_ids": (teacher_ids, (n, k)),
                "teacher_logp": (teacher_logp, (n, k)), "teacher_tail": (teacher_tail, (n,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape or tensor.device != logits.device:
            raise ValueError(f"superstill_loss: {name} must be {list(shape)} on {logits.device} "
                             f"(logits are {list(logits.shape)}), got {list(tensor.shape)} on {tensor.device}")
    if not 1 <= k <= vocab:
        raise ValueError(f"superstill_loss: teacher top-k must be in [1, V={vocab}], got k={k}")
    if targets.dtype != torch.int64 or teacher_ids.dtype != torch.int64:
        raise ValueError("superstill_loss: targets and teacher_ids must be int64")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"superstill_loss: temperature must be a positive number, got {temperature}")
    if not (math.isfinite(w_teacher) and math.isfinite(w_data)):
        raise ValueError(f"superstill_loss: weights must be finite, got {w_teacher}, {w_data}")
    if tail not in TAIL_MODES:
        raise ValueError(f"superstill_loss: tail must be one of {TAIL_MODES}, got {tail!r}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"superstill_loss: chunk_rows must be >= 1, got {chunk_rows}")


def _check_values(logits, teacher_ids, teacher_tail, tail) -> None:
    """The value checks `check_values=True` asks for; each reads a tensor back to the host (a sync)."""
    if tail == "bucket" and teacher_ids.shape[1] == logits.shape[1] and bool((teacher_tail != 0).any()):
        raise ValueError("superstill_loss: teacher_tail must be 0 when k equals the vocabulary size")
