"""Training objectives: the only part of the training loop that differs between teacher, baseline and student.

An objective maps (model, batch, epoch, elapsed epochs) to a loss and the named terms to log. The teacher and the
baseline use plain next-token cross-entropy; the superstilled student adds the teacher term (see
`SuperstillObjective`) until its transition epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from pipeline.batching import Batch
from pipeline.distillation import DistillationSpec


@dataclass
class StepLoss:
    loss: torch.Tensor
    """Scalar to backpropagate."""
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars to log, e.g. {"loss_data": 4.1, "loss_teacher": 3.9}; kept as tensors so a CUDA
    step never waits for the device just to log."""


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int, elapsed: float | None = None) -> StepLoss:
        """`epoch` is 1-based; `elapsed` the epochs completed before this step (fractional; None: epoch - 1)."""

    def uses_teacher(self, epoch: int) -> bool:
        """Whether batches of this epoch need teacher rows (the loader skips reading them otherwise)."""

    def describe(self) -> dict[str, Any] | None:
        """Settings recorded in run.json (None for plain cross-entropy)."""

    def schedule_phase(self, epoch: int, elapsed: float) -> tuple[str, str] | None:
        """(phase, reason) of the teacher weight's schedule at a step, or None without a teacher."""

    def observe(self, elapsed: float, val_nll: float) -> None:
        """An evaluation point's held-out cross-entropy (NaN when unmeasured): what an auto schedule decides on."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep for an exact resume (beyond the settings)."""

    def load_state(self, state: dict[str, Any]) -> None: ...


class DataObjective:
    """Plain next-token cross-entropy: the teacher's and the same-size baseline's loss (l_d)."""

    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int, elapsed: float | None = None) -> StepLoss:
        logits = model(batch.inputs)  # [B, C, V]
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch.targets.reshape(-1))
        return StepLoss(loss, {"loss_data": loss.detach()})

    def uses_teacher(self, epoch: int) -> bool:
        return False

    def describe(self) -> dict[str, Any] | None:
        return None

    def schedule_phase(self, epoch: int, elapsed: float) -> tuple[str, str] | None:
        return None

    def observe(self, elapsed: float, val_nll: float) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None


class SuperstillObjective:
    """L = w1 * T^2 * l_t + w2 * l_d through `transition_epoch`, then plain l_d (see pipeline/losses.py).

    The teacher comes either from the batch (rows streamed from a logit store) or, in online mode, from a
    frozen teacher model run on the same windows every step (the paper's original implementation).
    """

    def __init__(self, spec: DistillationSpec, teacher_model: torch.nn.Module | None = None,
                 online_top_k: int | None = None, source: str = "", teacher_nll: float | None = None):
        self.spec, self.teacher_model, self.online_top_k, self.source = spec, teacher_model, online_top_k, source
        self.teacher_nll = teacher_nll
        """The teacher's held-out cross-entropy (nats/token): where an auto schedule starts decaying."""
        self.caught_up: float | None = None
        """Epochs elapsed at the evaluation where the student first reached teacher_nll (auto; None: not yet)."""

    def uses_teacher(self, epoch: int) -> bool:
        return self.spec.uses_teacher(epoch, self.caught_up)

    def observe(self, elapsed: float, val_nll: float) -> None:
        if self.spec.schedule == "auto" and self.caught_up is None and val_nll <= self.teacher_nll:
            self.caught_up = elapsed  # NaN (no held-out split) compares False: never decays

    def state(self) -> dict[str, Any]:
        return {"caught_up": self.caught_up}

    def load_state(self, state: dict[str, Any]) -> None:
        self.caught_up = state.get("caught_up")

    def describe(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "mode": "online" if self.teacher_model is not None else "store",
                "online_top_k": self.online_top_k, "teacher_logits": self.source}

    def schedule_phase(self, epoch: int, elapsed: float) -> tuple[str, str] | None:
        phase = self.spec.phase(epoch, elapsed, self.caught_up)
        return phase, self.spec.phase_reason(phase, self.caught_up)

    def weights(self, epoch: int, elapsed: float | None = None) -> tuple[float, float]:
        """(w1, w2) of this step under the spec's schedule."""
        return self.spec.weights(epoch, epoch - 1.0 if elapsed is None else elapsed, self.caught_up)

    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int, elapsed: float | None = None) -> StepLoss:
        from pipeline.losses import superstill_loss

        w_teacher, w_data = self.weights(epoch, elapsed)
        if w_teacher == 0.0:  # plain cross-entropy, scaled: no teacher rows needed, none read
            plain = DataObjective()(model, batch, epoch)
            return plain if w_data == 1.0 else StepLoss(plain.loss * w_data, plain.terms)
        ids, logp, tail = self._teacher(batch)
        logits = model(batch.inputs)  # [B, C, V]
        spec = self.spec
        result = superstill_loss(logits.view(-1, logits.size(-1)), batch.targets.reshape(-1), ids, logp, tail,
                                 temperature=spec.temperature, w_teacher=w_teacher, w_data=w_data, tail=spec.tail)
        return StepLoss(result.loss, {"loss_teacher": result.teacher_term, "loss_data": result.data_term})

    def _teacher(self, batch: Batch):
        """(ids [N, k], log-probs [N, k], tail [N]) at T for the batch's B*C input positions."""
        if self.teacher_model is None:
            if batch.teacher is None:
                raise RuntimeError("a store-fed superstill step got a batch without teacher rows")
            return batch.teacher.at_temperature(self.spec.temperature)
        from pipeline.teacher_rows import teacher_rows_from_logits

        teacher = self.teacher_model.to(batch.inputs.device)
        with torch.no_grad():
            logits = teacher(batch.inputs)  # [B, C, V]
        logits = logits.float().view(-1, logits.size(-1))  # [N, V]
        if not self.online_top_k or self.online_top_k >= logits.size(-1):
            # The full distribution needs no ranking: every id, exact log-probabilities, no tail.
            ids = torch.arange(logits.size(-1), device=logits.device).expand_as(logits)
            return ids, torch.log_softmax(logits / self.spec.temperature, dim=-1), logits.new_zeros(logits.size(0))
        rows = teacher_rows_from_logits(logits, self.online_top_k, (self.spec.temperature,))
        return rows.at_temperature(self.spec.temperature)
