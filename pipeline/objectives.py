"""Training objectives: the only part of the training loop that differs between teacher, baseline and student.

An objective maps (model, batch, epoch) to a loss and the named terms to log. The teacher and the
baseline use plain next-token cross-entropy; the superstilled student adds the teacher term (see
`SuperstillObjective`) until its transition epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from pipeline.batching import Batch


@dataclass
class StepLoss:
    loss: torch.Tensor
    """Scalar to backpropagate."""
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars to log, e.g. {"loss_data": 4.1, "loss_teacher": 3.9}; kept as tensors so a CUDA
    step never waits for the device just to log."""


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int) -> StepLoss: ...

    def uses_teacher(self, epoch: int) -> bool:
        """Whether batches of this epoch need teacher rows (the loader skips reading them otherwise)."""

    def describe(self) -> dict[str, Any] | None:
        """Settings recorded in run.json (None for plain cross-entropy)."""


class DataObjective:
    """Plain next-token cross-entropy: the teacher's and the same-size baseline's loss (l_d)."""

    def __call__(self, model: torch.nn.Module, batch: Batch, epoch: int) -> StepLoss:
        logits = model(batch.inputs)  # [B, C, V]
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch.targets.reshape(-1))
        return StepLoss(loss, {"loss_data": loss.detach()})

    def uses_teacher(self, epoch: int) -> bool:
        return False

    def describe(self) -> dict[str, Any] | None:
        return None
