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

  Why bucket is the default, measured on five plays with k = 64: renorm at T = 6 diverged (held-out
  perplexity 3,816 against the baseline's 285) while bucket stayed within 2% of full KD. (At high T the
  teacher's mass outside its top-k is large, and renorm moves all of it onto the k ids.)

Both terms are means over the rows whose target is not `ignore_index` (-100, as in F.cross_entropy);
ignored rows get a zero gradient. A batch with no valid rows gives 0 (not nan) and a zero gradient.

Implementation: a `torch.autograd.Function` walks the rows in chunks whose temporaries stay small (64 MB
in all, see CHUNK_BYTES), computes both softmaxes, the loss terms and the closed-form gradient w.r.t.
the logits, and writes the gradient into one [N, V] buffer in the logits' dtype; backward only scales it
by grad_output. No dense teacher distribution over V and no second autograd pass over [N, V] exist.
Closed forms per valid row (M valid rows), with zT = z / T, q = softmax(zT), s = softmax(z) (the
student's; p is always the teacher's):

  bucket:  S = sum_k p_k + p_tail;  dl_t/dzT_j = S q_j - p_j (j in top-k),  q_j (S - p_tail / q_tail) (else)
  renorm:  r_k = p_k / sum p;       dl_t/dzT_j = q_j - r_j   (j in top-k),  q_j                     (else)
  data:    dl_d/dz_j = s_j - [j = target]
  dL/dz = (w1 T / M) dl_t/dzT + (w2 / M) dl_d/dz       (the T^2 of the loss times the 1/T of zT = z/T)

q_tail is the masked sum of q over the non-top-k ids, never 1 - sum_k q_k (which cancels to noise when
the student puts almost all its mass on the top-k and makes p_tail / q_tail blow up). Rows where q_tail
falls below sqrt(float tiny) while p_tail > 0 are redone exactly in log space (rare; see _exact_tail_rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TAIL_MODES = ("bucket", "renorm")
IGNORE_INDEX = -100
# Bytes of [rows, V] chunk temporaries in all: q; s = softmax(z) too without a gradient (with one, s is
# written into the gradient rows); float32 copies of z and of the gradient rows for bf16/fp16 logits.
# Why this large: each chunk costs ~6 parallel regions (thread barriers), cheap on an idle machine but a
# scheduler slice (~ms) each when neighbours load the 2 cores. Loss fwd+bwd medians as a ratio to
# F.cross_entropy (N=2048 V=12k / N=4096 V=50k), under such load: 8 MB 2.9x / 3.2x, 16 MB 1.8x / 1.9x,
# 64 MB 1.7x / 0.87x; idle: 4 MB 0.58x / 0.59x (cache reuse), 64 MB 0.82x / 0.68x.
CHUNK_BYTES = 64 * 2**20


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
                    chunk_rows: int | None = None) -> SuperstillLoss:
    """The superstill loss (see the module docstring) of student logits [N, V] against targets [N] (int64)
    and the stored teacher: teacher_ids [N, k] int64, teacher_logp [N, k], teacher_tail [N].

    Computes in float32 (float64 for float64 logits). `chunk_rows` overrides the rows per chunk (the
    result does not depend on it beyond float rounding). The [N, V] gradient is made in forward and
    scaled in place by backward, so a second backward through a retained graph works only while
    grad_output is 1 (otherwise autograd raises: a saved tensor was modified in place).
    """
    _validate(logits, targets, teacher_ids, teacher_logp, teacher_tail, temperature, w_teacher, w_data,
              tail, chunk_rows)
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
        if grad_loss is None or bool((grad_loss == 1).all()):
            return grad, None, None, None, None, None          # the usual case: no pass over [N, V]
        # In place: a later backward through a retained graph then fails autograd's saved-tensor version
        # check (a RuntimeError) instead of silently using the scaled buffer.
        return grad.mul_(grad_loss.to(grad.dtype)), None, None, None, None, None


def _compute(logits: Tensor, targets: Tensor, teacher_ids: Tensor, teacher_logp: Tensor,
             teacher_tail: Tensor, spec: _Spec, want_grad: bool):
    """(loss, l_t, l_d, grad [N, V] or None): every [N, V] pass happens here, one row chunk at a time."""
    logits = logits.contiguous()
    n, vocab = logits.shape
    plan = _plan(logits, targets, teacher_ids, teacher_logp, teacher_tail, spec)
    grad = torch.empty_like(logits) if want_grad else None
    temporaries = 1 + (not want_grad) + 2 * (logits.dtype != plan.dtype)
    rows = max(1, min(n, spec.chunk_rows or CHUNK_BYTES // (temporaries * vocab * plan.dtype.itemsize)))
    bufs = _Buffers(rows, vocab, plan.dtype, logits.dtype, logits.device, want_grad)
    stats = _RowStats.empty(n, teacher_ids.shape[1], plan.dtype, logits.device)
    for start in range(0, n, rows):
        _dense_chunk(logits, teacher_ids, plan, bufs, stats, grad, slice(start, min(start + rows, n)), spec)
    row_t, row_d = _row_losses(logits, plan, stats, spec)
    if spec.tail == "bucket":
        _exact_tail_rows(logits, teacher_ids, plan, stats, row_t, grad, spec)
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
    """Chunk temporaries, allocated once per call and reused by every chunk ([rows, V] each)."""

    def __init__(self, rows: int, vocab: int, dtype, logits_dtype, device, want_grad: bool):
        def make():
            return torch.empty(rows, vocab, dtype=dtype, device=device)
        # softmax(z) is written where the gradient rows will be (it is their first term), so a float32
        # gradient needs no s buffer; bf16/fp16 logits get float32 copies of z and of the gradient.
        self.s = None if want_grad else make()
        self.q = make()                                            # softmax(z / T)
        self.z = make() if logits_dtype != dtype else None
        self.g = make() if want_grad and logits_dtype != dtype else None

    def s_rows(self, grad, rows: slice, c: int) -> Tensor:
        """Where softmax(z) of this chunk goes: the gradient's rows (float32 staging for bf16), else s."""
        if grad is None:
            return self.s[:c]
        return self.g[:c] if self.g is not None else grad[rows]


@dataclass(frozen=True)
class _RowStats:
    """What the dense pass leaves behind per row; the loss terms are finished from these, batched."""

    z_k: Tensor     # [N, k] z at the teacher's ids
    s_at_k: Tensor  # [N, k] softmax(z) at the teacher's ids (the student's, unlike _Plan.p_k)
    q_at_k: Tensor  # [N, k] softmax(z / T) at the teacher's ids
    z_y: Tensor     # [N, 1] z at the target
    q_tail: Tensor  # [N, 1] student mass at T outside the top-k (bucket)

    @staticmethod
    def empty(n: int, k: int, dtype, device) -> "_RowStats":
        def make(width):
            return torch.ones(n, width, dtype=dtype, device=device)
        return _RowStats(make(k), make(k), make(k), make(1), make(1))


def _softmax_into(x: Tensor, out: Tensor) -> Tensor:
    # torch.softmax has no out=; the aten op writes into our reused buffer (in place when out is x).
    return torch.ops.aten._softmax.out(x, 1, False, out=out)


def _dense_chunk(logits, teacher_ids, plan: _Plan, bufs: _Buffers, stats: _RowStats, grad, rows: slice,
                 spec: _Spec) -> None:
    """Both softmaxes of one row chunk, its row statistics and (when grad is given) its gradient rows.

    Each pass over [c, V] is one parallel region (a thread barrier): on a busy 2-core machine their
    count, not just the bytes moved, sets the cost, so there are as few as possible per chunk.
    """
    z = logits[rows]                                      # [c, V]
    c = z.shape[0]
    if bufs.z is not None:
        z = bufs.z[:c].copy_(z)
    ids = teacher_ids[rows]
    s = _softmax_into(z, bufs.s_rows(grad, rows, c))    # the student's softmax(z)
    q = s if spec.temperature == 1.0 else _softmax_into(
        torch.mul(z, 1.0 / spec.temperature, out=bufs.q[:c]), bufs.q[:c])
    torch.gather(z, 1, ids, out=stats.z_k[rows])
    torch.gather(z, 1, plan.target[rows], out=stats.z_y[rows])
    s_k = torch.gather(s, 1, ids, out=stats.s_at_k[rows])                # [c, k]
    q_k = torch.gather(q, 1, ids, out=stats.q_at_k[rows])
    if grad is None and spec.tail != "bucket":
        return
    outside = _outside_coefficient(q, ids, plan, stats, rows, spec)   # zeroes q (and s if T = 1) on ids
    if grad is not None:
        _gradient_chunk(s, q, ids, s_k, q_k, outside, plan, bufs, grad, rows)


def _outside_coefficient(q, ids, plan: _Plan, stats: _RowStats, rows: slice, spec: _Spec) -> Tensor:
    """[c, 1]: dL/dz_j = w_d s_j + q_j * this for ids j outside the top-k (and not the target).

    bucket: w_t (S - p_tail / q_tail); renorm: w_t S (S = 1). Bucket zeroes q on the top-k to sum q_tail.
    """
    if spec.tail != "bucket":
        return plan.w_mass[rows]
    q.scatter_(1, ids, 0.0)                                # q now holds only the mass outside the top-k
    q_tail = torch.sum(q, 1, keepdim=True, out=stats.q_tail[rows])
    # Rows with q_tail this small are redone exactly afterwards; the clamp only keeps this pass finite.
    floor = math.sqrt(torch.finfo(q.dtype).tiny)
    return plan.w_mass[rows] - plan.w_tail[rows] / q_tail.clamp_min(floor)


def _gradient_chunk(s, q, ids, s_k, q_k, outside, plan: _Plan, bufs: _Buffers, grad, rows) -> None:
    """grad rows = w_d (s - onehot(target)) + w_t dl_t/dzT, built in place where s = softmax(z) was written."""
    if q is s:                                             # T = 1: one distribution, one pass
        s.mul_(plan.w_d[rows] + outside)
    else:
        s.mul_(plan.w_d[rows]).addcmul_(q, outside)        # right everywhere but the top-k and the target
    # Top-k ids: w_t (S q_k - p_k) + w_d s_k; q (and s when T = 1) were zeroed there: overwrite.
    top_k = torch.addcmul(plan.k_base[rows], q_k, plan.w_mass[rows]).addcmul_(s_k, plan.w_d[rows])
    s.scatter_(1, ids, top_k)
    s.scatter_add_(1, plan.target[rows], plan.neg_w_d[rows])
    if bufs.g is not None:
        grad[rows].copy_(s)


def _row_losses(logits, plan: _Plan, stats: _RowStats, spec: _Spec) -> tuple[Tensor, Tensor]:
    """Per-row l_t and l_d [N] from the row statistics (garbage on ignored rows; masked by the caller)."""
    inv_t = 1.0 / spec.temperature
    lse, lse_t = _logsumexps(logits, stats, inv_t)
    row_t = -(plan.p_k * (stats.z_k * inv_t - lse_t)).sum(1)
    if spec.tail == "bucket":
        has_tail = plan.p_tail > 0                 # p_tail = 0 (e.g. k = V): no term, even if q_tail = 0
        row_t = row_t - torch.where(has_tail, plan.p_tail * stats.q_tail.log(), 0.0).squeeze(1)
    return row_t, (lse - stats.z_y).squeeze(1)


def _logsumexps(logits, stats: _RowStats, inv_t: float) -> tuple[Tensor, Tensor]:
    """logsumexp(z) and logsumexp(z / T) [N, 1] without another pass over [N, V].

    For any id j, logsumexp(z) = z_j - log softmax(z)_j, accurate to float rounding while softmax(z)_j
    is a normal float. The pivot j is the teacher id the student scores highest, whose probability is
    rarely tiny; rows where it is (below sqrt(float tiny)) take the exact logsumexp over their row.
    """
    pivot = stats.z_k.argmax(1, keepdim=True)                              # [N, 1] column into the top-k
    z_j, s_j, q_j = (t.gather(1, pivot) for t in (stats.z_k, stats.s_at_k, stats.q_at_k))
    lse, lse_t = z_j - s_j.log(), z_j * inv_t - q_j.log()
    floor = math.sqrt(torch.finfo(z_j.dtype).tiny)
    redo = (torch.minimum(s_j, q_j) < floor).squeeze(1).nonzero()[:, 0]
    if len(redo):
        z = logits[redo].to(z_j.dtype)
        lse[redo], lse_t[redo] = z.logsumexp(1, keepdim=True), (z * inv_t).logsumexp(1, keepdim=True)
    return lse, lse_t


def _exact_tail_rows(logits, teacher_ids, plan: _Plan, stats: _RowStats, row_t, grad, spec: _Spec) -> None:
    """Redo, in log space, the rows whose student tail mass q_tail is too small to divide by.

    There q_tail may underflow to 0 while p_tail > 0; the log-space form stays exact: log q_tail =
    logsumexp(zT over non-top-k) - logsumexp(zT), and q_j / q_tail = exp(zT_j - logsumexp(zT over non-top-k)).
    """
    floor = math.sqrt(torch.finfo(plan.dtype).tiny)
    redo = (plan.valid & (plan.p_tail > 0).squeeze(1) & (stats.q_tail < floor).squeeze(1)).nonzero()[:, 0]
    if len(redo) == 0:
        return
    z = logits[redo].to(plan.dtype)                                      # [r, V]
    z_t, ids, p_k = z * (1.0 / spec.temperature), teacher_ids[redo], plan.p_k[redo]
    lse_t = z_t.logsumexp(1, keepdim=True)
    z_out = z_t.scatter(1, ids, -math.inf)                               # zT on the non-top-k ids only
    lse_out = z_out.logsumexp(1, keepdim=True)
    p_tail = plan.p_tail[redo]
    row_t[redo] = -(p_k * (z_t.gather(1, ids) - lse_t)).sum(1) - (p_tail * (lse_out - lse_t)).squeeze(1)
    if grad is None:
        return
    # dL/dz = w_t (S q - p_tail q_j / q_tail on non-top-k - p_k on top-k) + w_d (s - onehot(target))
    g = plan.w_mass[redo] * (z_t - lse_t).exp() - plan.w_tail[redo] * (z_out - lse_out).exp()
    g.scatter_add_(1, ids, plan.k_base[redo])
    g.addcmul_(z.softmax(1), plan.w_d[redo]).scatter_add_(1, plan.target[redo], plan.neg_w_d[redo])
    grad[redo] = g.to(grad.dtype)


def _validate(logits, targets, teacher_ids, teacher_logp, teacher_tail, temperature, w_teacher, w_data,
              tail, chunk_rows) -> None:
    """Programming errors (wrong shapes or arguments) raise ValueError; user input is checked upstream."""
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
    if tail == "bucket" and k == vocab and bool((teacher_tail != 0).any()):
        raise ValueError("superstill_loss: teacher_tail must be 0 when k equals the vocabulary size")
