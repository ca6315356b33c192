"""The fused superstill loss against a plain dense reference: values, gradients, edge cases."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.losses import cross_entropy, superstill_loss

IGNORE = -100


def superstill_loss_reference(logits, targets, teacher_ids, teacher_logp, teacher_tail, *, temperature,
                              w_teacher=0.6, w_data=0.4, tail="bucket"):
    """The loss written plainly: dense teacher distribution, dense log-softmaxes, explicit sums, autograd.

    Returns (loss, l_t, l_d) in the logits' dtype; pass float64 logits for a high-precision reference.
    """
    keep = targets != IGNORE
    z, y = logits[keep], targets[keep]
    ids, p_k, p_tail = teacher_ids[keep], teacher_logp[keep].to(z.dtype).exp(), teacher_tail[keep].to(z.dtype)
    log_q = F.log_softmax(z / temperature, dim=1)                           # [M, V]
    if tail == "renorm":
        p_k = p_k / p_k.sum(1, keepdim=True)
    teacher = torch.zeros_like(z).scatter(1, ids, p_k)                      # dense [M, V], zero off the top-k
    l_t_rows = -(teacher * log_q).sum(1)
    if tail == "bucket" and ids.shape[1] < z.shape[1]:
        outside = torch.ones_like(z, dtype=torch.bool).scatter(1, ids, False)
        log_q_tail = torch.logsumexp(log_q.masked_fill(~outside, -math.inf), dim=1)   # log of the student's tail
        l_t_rows = l_t_rows - p_tail * log_q_tail
    l_d_rows = -F.log_softmax(z, dim=1).gather(1, y[:, None])[:, 0]
    l_t, l_d = l_t_rows.mean(), l_d_rows.mean()
    return w_teacher * temperature ** 2 * l_t + w_data * l_d, l_t, l_d


def make_teacher(n, vocab, k, temperature, gen, scale=3.0):
    """Stored-teacher tensors from random teacher logits: ids [n, k], logp [n, k] float32, tail [n] float32."""
    log_p = F.log_softmax(torch.randn(n, vocab, generator=gen, dtype=torch.float64) * scale / temperature, 1)
    logp, ids = log_p.topk(k, dim=1)
    tail = log_p.exp().scatter(1, ids, 0.0).sum(1)                          # exactly 0 when k = V
    return ids, logp.float(), tail.float()


def make_targets(n, vocab, gen, ignore_every=4):
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[ignore_every - 1::ignore_every] = IGNORE
    return targets


def fused(logits, *teacher, **kwargs):
    """(SuperstillLoss, d loss / d logits) of the fused implementation."""
    logits = logits.detach().clone().requires_grad_()
    out = superstill_loss(logits, *teacher, **kwargs)
    out.loss.backward()
    return out, logits.grad


def reference(logits, *teacher, **kwargs):
    """((loss, l_t, l_d), d loss / d logits) of the plain reference in float64."""
    logits = logits.detach().double().requires_grad_()
    terms = superstill_loss_reference(logits, *teacher, **kwargs)
    terms[0].backward()
    return terms, logits.grad


def assert_matches_reference(out, grad, terms, ref_grad, rtol=1e-5, grad_rtol=1e-5):
    for got, want in zip((out.loss, out.teacher_term, out.data_term), terms):
        torch.testing.assert_close(got.double(), want.detach(), rtol=rtol, atol=rtol)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=grad_rtol, atol=grad_rtol * ref_grad.abs().max().item())


CASES = [  # n, vocab, k, temperature, chunk_rows
    (1, 2, 1, 1.0, None),
    (13, 50, 5, 1.0, 4),
    (13, 50, 5, 2.0, 4),
    (40, 97, 16, 6.0, 7),
    (24, 300, 64, 2.0, None),
    (9, 30, 29, 3.0, 2),
    (9, 30, 30, 3.0, 2),       # k = V
    (17, 1000, 1, 0.5, 5),
]


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
@pytest.mark.parametrize("n,vocab,k,temperature,chunk_rows", CASES)
def test_float32_matches_reference(n, vocab, k, temperature, chunk_rows, tail):
    gen = torch.Generator().manual_seed(n * vocab + k)
    logits = torch.randn(n, vocab, generator=gen) * 3
    teacher = (make_targets(n, vocab, gen), *make_teacher(n, vocab, k, temperature, gen))
    kwargs = dict(temperature=temperature, w_teacher=0.6, w_data=0.4, tail=tail)
    out, grad = fused(logits, *teacher, chunk_rows=chunk_rows, **kwargs)
    assert grad.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert not out.teacher_term.requires_grad and not out.data_term.requires_grad
    assert_matches_reference(out, grad, *reference(logits, *teacher, **kwargs))
    with torch.no_grad():                                                   # no gradient: its own buffers
        values = superstill_loss(logits, *teacher, chunk_rows=chunk_rows, **kwargs)
    torch.testing.assert_close(values.loss, out.loss.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
def test_float64_matches_reference_tightly(tail):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(21, 60, generator=gen, dtype=torch.float64) * 4
    teacher = (make_targets(21, 60, gen), *make_teacher(21, 60, 8, 2.5, gen))
    kwargs = dict(temperature=2.5, w_teacher=0.7, w_data=0.3, tail=tail)
    out, grad = fused(logits, *teacher, chunk_rows=5, **kwargs)
    assert grad.dtype == torch.float64
    assert_matches_reference(out, grad, *reference(logits, *teacher, **kwargs), rtol=1e-12, grad_rtol=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_bf16_logits_compute_in_float32_and_return_bf16_gradient(temperature):
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(30, 200, generator=gen) * 3).bfloat16()
    teacher = (make_targets(30, 200, gen), *make_teacher(30, 200, 10, temperature, gen))
    out, grad = fused(logits, *teacher, temperature=temperature, chunk_rows=8)
    assert grad.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    terms, ref_grad = reference(logits, *teacher, temperature=temperature)  # the same bf16 values
    # The loss is computed in float32 from the bf16 values; only the gradient is rounded to bf16.
    assert_matches_reference(out, grad, terms, ref_grad, rtol=1e-5, grad_rtol=1e-2)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("layout", ["sorted", "arange"])
def test_bucket_with_full_vocabulary_is_full_distillation(temperature, layout):
    """k = V: stored rows sorted by probability, or (the online teacher's layout) every id in order as an
    expanded arange with unsorted log-probabilities."""
    n, vocab = 12, 40
    gen = torch.Generator().manual_seed(3)
    teacher_logits = torch.randn(n, vocab, generator=gen, dtype=torch.float64) * 3
    p = F.softmax(teacher_logits / temperature, 1)                         # the teacher's dense distribution
    if layout == "sorted":
        logp, ids = p.log().sort(dim=1, descending=True)
    else:
        logp, ids = p.log(), torch.arange(vocab).expand(n, vocab)
    targets = make_targets(n, vocab, gen)
    logits = torch.randn(n, vocab, generator=gen) * 3
    out, grad = fused(logits, targets, ids, logp.float(), torch.zeros(n), temperature=temperature)
    # Full KD written from the dense teacher: -sum_v p_v log q_v, plus CE, over the non-ignored rows.
    z = logits.double().requires_grad_()
    keep = targets != IGNORE
    l_t = -(p[keep] * F.log_softmax(z[keep] / temperature, 1)).sum(1).mean()
    l_d = F.cross_entropy(z, targets, ignore_index=IGNORE)
    (0.6 * temperature ** 2 * l_t + 0.4 * l_d).backward()
    torch.testing.assert_close(out.teacher_term.double(), l_t.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), z.grad, rtol=1e-4, atol=1e-4 * z.grad.abs().max().item())


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
def test_zero_teacher_weight_is_cross_entropy(tail):
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(25, 80, generator=gen) * 3
    teacher = (make_targets(25, 80, gen), *make_teacher(25, 80, 6, 3.0, gen))
    out, grad = fused(logits, *teacher, temperature=3.0, w_teacher=0.0, w_data=1.0, tail=tail)
    z = logits.clone().requires_grad_()
    ce = F.cross_entropy(z, teacher[0], ignore_index=IGNORE)
    ce.backward()
    torch.testing.assert_close(out.loss, ce.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, z.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
def test_chunk_size_does_not_change_the_result(tail):
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(23, 70, generator=gen) * 3
    teacher = (make_targets(23, 70, gen), *make_teacher(23, 70, 9, 2.0, gen))
    results = [fused(logits, *teacher, temperature=2.0, tail=tail, chunk_rows=rows) for rows in (1, 4, 23, None)]
    for out, grad in results[1:]:
        torch.testing.assert_close(out.loss, results[0][0].loss, rtol=1e-6, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
def test_gradient_matches_central_differences_float64(tail):
    """The closed-form gradient against the loss itself, with no reference implementation in between.
    (Not torch.autograd.gradcheck: it backpropagates twice through one graph, which this loss refuses.)"""
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(5, 7, generator=gen, dtype=torch.float64) * 2
    targets, (ids, logp, p_tail) = make_targets(5, 7, gen, ignore_every=3), make_teacher(5, 7, 3, 1.5, gen)
    teacher = (targets, ids, logp.double(), p_tail.double())

    def loss(x):
        return superstill_loss(x, *teacher, temperature=1.5, tail=tail, chunk_rows=2).loss

    eps, numeric = 1e-6, torch.zeros_like(logits)
    with torch.no_grad():
        for i in range(logits.numel()):
            step = torch.zeros_like(logits).view(-1).index_fill_(0, torch.tensor(i), eps).view_as(logits)
            numeric.view(-1)[i] = (loss(logits + step) - loss(logits - step)) / (2 * eps)
    _, grad = fused(logits, *teacher, temperature=1.5, tail=tail, chunk_rows=2)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_teacher_tail_near_one_and_student_without_tail_stay_finite(temperature):
    """p_tail ~ 1 and a student whose mass outside the top-k underflows float32 (at T = 3 too, for the
    larger gaps): the tail is taken in log space."""
    n, vocab, k = 6, 50, 4
    gen = torch.Generator().manual_seed(7)
    ids = torch.stack([torch.randperm(vocab, generator=gen)[:k] for _ in range(n)])
    logp = torch.full((n, k), math.log(1e-6 / k))                           # top-k holds 1e-6 of the mass
    p_tail = torch.full((n,), 1 - 1e-6)
    # Student: top-k ids at 0, everything else 40 / 150 / 2000 below (q_tail ~ 4e-16, 7e-64, 0 in float32).
    gaps = torch.tensor([40.0, 150.0, 2000.0, 40.0, 150.0, 2000.0])[:, None]
    logits = (-gaps).expand(n, vocab).clone().scatter_(1, ids, 0.0) + torch.randn(n, vocab, generator=gen) * 0.1
    targets = ids[:, 0].clone()
    teacher = (targets, ids, logp, p_tail)
    out, grad = fused(logits, *teacher, temperature=temperature, chunk_rows=4)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    terms, ref_grad = reference(logits, *teacher, temperature=temperature)
    assert_matches_reference(out, grad, terms, ref_grad)
    with torch.no_grad():
        assert torch.allclose(superstill_loss(logits, *teacher, temperature=temperature).loss, out.loss, rtol=1e-6)


@pytest.mark.parametrize("tail", ["bucket", "renorm"])
def test_student_with_no_mass_on_the_teacher_top_k(tail):
    """The student's probabilities at every teacher id underflow float32: logsumexp takes the exact path."""
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(7, 40, generator=gen)
    targets, ids, logp, p_tail = make_targets(7, 40, gen), *make_teacher(7, 40, 3, 2.0, gen)
    logits.scatter_(1, ids, -300.0)
    out, grad = fused(logits, targets, ids, logp, p_tail, temperature=2.0, tail=tail, chunk_rows=3)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    assert_matches_reference(out, grad, *reference(logits, targets, ids, logp, p_tail, temperature=2.0, tail=tail))


def test_ignored_rows_get_zero_gradient_and_all_ignored_gives_zero():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(10, 30, generator=gen) * 3
    targets, ids, logp, p_tail = make_targets(10, 30, gen, ignore_every=3), *make_teacher(10, 30, 5, 2.0, gen)
    out, grad = fused(logits, targets, ids, logp, p_tail, temperature=2.0, chunk_rows=3)
    assert (grad[targets == IGNORE] == 0).all() and (grad[targets != IGNORE] != 0).any()
    out, grad = fused(logits, torch.full_like(targets, IGNORE), ids, logp, p_tail, temperature=2.0)
    assert out.loss.item() == 0.0 and (grad == 0).all()


def test_linear_head_gradient_and_no_grad_path():
    """Real use: logits from a matmul (not a leaf); grad_output scaling; no_grad gives the same values."""
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    weight = (torch.randn(8, 40, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    teacher = (make_targets(16, 40, gen), *make_teacher(16, 40, 6, 2.0, gen))
    (3.0 * superstill_loss(hidden @ weight, *teacher, temperature=2.0).loss).backward()
    got, weight.grad = weight.grad, None
    (3.0 * superstill_loss_reference(hidden @ weight, *teacher, temperature=2.0)[0]).backward()
    torch.testing.assert_close(got, weight.grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        values = superstill_loss(hidden @ weight, *teacher, temperature=2.0)
    assert not values.loss.requires_grad
    torch.testing.assert_close(values.loss, superstill_loss_reference(hidden @ weight, *teacher,
                                                                      temperature=2.0)[0].detach())


def test_second_backward_with_retained_graph_raises():
    """Backward scales the saved gradient in place (no copy of [N, V], no check of grad_output on the
    host), so autograd refuses a second pass through a retained graph instead of using a scaled buffer."""
    gen = torch.Generator().manual_seed(10)
    logits = (torch.randn(6, 20, generator=gen) * 3).requires_grad_()
    teacher = (make_targets(6, 20, gen), *make_teacher(6, 20, 4, 2.0, gen))
    (2 * superstill_loss(logits, *teacher, temperature=2.0).loss).backward()
    twice = logits.grad.clone()
    logits.grad = None
    loss = superstill_loss(logits, *teacher, temperature=2.0).loss
    loss.backward(retain_graph=True)
    torch.testing.assert_close(twice, 2 * logits.grad)                     # grad_output scales
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_renorm_ignores_the_teacher_tail():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(8, 30, generator=gen)
    targets, ids, logp, p_tail = make_targets(8, 30, gen), *make_teacher(8, 30, 5, 2.0, gen)
    a = superstill_loss(logits, targets, ids, logp, p_tail, temperature=2.0, tail="renorm")
    b = superstill_loss(logits, targets, ids, logp, torch.rand(8, generator=gen), temperature=2.0, tail="renorm")
    c = superstill_loss(logits, targets, ids, logp, torch.rand(8, generator=gen), temperature=2.0, tail="bucket")
    assert a.teacher_term == b.teacher_term and c.teacher_term != a.teacher_term


def test_cross_entropy_is_the_baseline_loss():
    gen = torch.Generator().manual_seed(12)
    logits, targets = torch.randn(9, 25, generator=gen), make_targets(9, 25, gen)
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets, ignore_index=IGNORE))
    assert cross_entropy(logits.bfloat16(), targets).dtype == torch.float32


@pytest.mark.parametrize("change,message", [
    (dict(targets=torch.zeros(3, dtype=torch.int64)), "targets must be"),
    (dict(teacher_logp=torch.zeros(4, 2)), "teacher_logp must be"),
    (dict(teacher_ids=torch.zeros(4, 2, dtype=torch.int32), teacher_logp=torch.zeros(4, 2)), "int64"),
    (dict(temperature=0.0), "temperature"),
    (dict(tail="drop"), "tail must be one of"),
    (dict(chunk_rows=0), "chunk_rows"),
    (dict(teacher_ids=torch.arange(6).repeat(4, 1), teacher_logp=torch.zeros(4, 6), check_values=True),
     "teacher_tail must be 0"),
])
def test_rejects_bad_arguments(change, message):
    args = dict(logits=torch.zeros(4, 6), targets=torch.zeros(4, dtype=torch.int64),
                teacher_ids=torch.zeros(4, 3, dtype=torch.int64), teacher_logp=torch.zeros(4, 3),
                teacher_tail=torch.full((4,), 0.5), temperature=2.0)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        superstill_loss(**args)


class ForbidHostReads(TorchDispatchMode):
    """Fails on every op that makes a CUDA host wait for the device: reading a value back (item, bool,
    int, float), nonzero, masked_select, boolean-mask indexing. CPU tensors go through the same ops, so
    this proves on CPU what torch.cuda.set_sync_debug_mode would on a GPU."""

    READS = {torch.ops.aten._local_scalar_dense, torch.ops.aten.item, torch.ops.aten.is_nonzero,
             torch.ops.aten.nonzero, torch.ops.aten.nonzero_static, torch.ops.aten.masked_select,
             torch.ops.aten.equal, torch.ops.aten.allclose, torch.ops.aten._unique2}
    MASKABLE = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.READS:
            raise AssertionError(f"{func} reads a device value back to the host")
        if func.overloadpacket in self.MASKABLE and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            raise AssertionError(f"{func} with a boolean mask needs nonzero")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_host_reads(monkeypatch):
    """ForbidHostReads, plus the host copies that bypass the dispatcher (tolist, numpy)."""
    def refuse(name):
        def method(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} reads a device value back to the host")
        return method
    with monkeypatch.context() as patch, ForbidHostReads():
        for name in ("tolist", "numpy", "__array__"):
            patch.setattr(torch.Tensor, name, refuse(name))
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tail,temperature,k", [("bucket", 2.0, 4), ("bucket", 1.0, 4), ("renorm", 2.0, 4),
                                                ("bucket", 2.0, 20), ("bucket", 1.0, 20)])
def test_forward_and_backward_never_wait_for_the_device(tail, temperature, k, dtype, monkeypatch):
    """No host read in a training step's loss, including rows that need the exact log-space values (a
    student with no mass outside, or none on the top-k) and k = V; grad_output is not 1, as under a
    gradient scaler."""
    gen = torch.Generator().manual_seed(14)
    logits = torch.randn(9, 20, generator=gen) * 3
    targets, ids, logp, p_tail = make_targets(9, 20, gen), *make_teacher(9, 20, k, temperature, gen)
    if k < 20:
        logits[0].fill_(-200.0).scatter_(0, ids[0], 0.0)                   # q_tail underflows
        logits[1].scatter_(0, ids[1], -300.0)                               # no mass on the top-k
    logits, scale = logits.to(dtype).requires_grad_(), torch.tensor(0.5)
    with forbid_host_reads(monkeypatch):
        out = superstill_loss(logits, targets, ids, logp, p_tail, temperature=temperature, tail=tail, chunk_rows=4)
        (out.loss * scale).backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logits.grad.float()).all()


def test_the_sync_check_catches_host_reads(monkeypatch):
    """The guard above is not vacuous: each way of reading a value back trips it."""
    x = torch.tensor([0.0, 1.0])
    for read in (lambda: bool(x.any()), lambda: x.sum().item(), lambda: x.nonzero(), lambda: x[x > 0],
                 lambda: float(x[1]), lambda: len(torch.nonzero(x)), lambda: x.tolist()):
        with pytest.raises(AssertionError, match="host|nonzero"), forbid_host_reads(monkeypatch):
            read()
