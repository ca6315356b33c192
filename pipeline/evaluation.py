"""Perplexity: exp of the mean next-token negative log-likelihood over non-overlapping windows.

Every token of the evaluated span except the first is predicted exactly once, from the tokens before it
within its window (context resets at window starts, as in the paper's training windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import UserError


@dataclass
class Perplexity:
    nll: float
    """Mean negative log-likelihood per predicted token, in nats."""
    tokens: int
    """Tokens predicted."""

    @property
    def ppl(self) -> float:
        if math.isnan(self.nll):
            return float("nan")
        return math.exp(self.nll) if self.nll < 700 else float("inf")


def eval_span(n_tokens: int, fraction: float = 1.0, max_tokens: int = 0) -> int:
    """How many leading tokens of a split an evaluation covers."""
    span = int(math.ceil(n_tokens * fraction))
    return min(span, max_tokens + 1) if max_tokens else span


@torch.no_grad()
def perplexity(model: torch.nn.Module, ids: np.ndarray, context: int, batch_size: int,
               device: torch.device, autocast_dtype: torch.dtype | None = None, split: str = "split") -> Perplexity:
    """Perplexity of `model` on `ids` (the whole array given) in windows of `context` tokens."""
    if ids.size < 2:
        raise UserError(f"the {split} split has {ids.size} tokens; nothing to evaluate (tokenize more text "
                        f"or use a larger --val-fraction)")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = np.arange(0, ids.size - 1, context)
    for i in range(0, starts.size, batch_size):
        chunk = starts[i:i + batch_size]
        lengths = np.minimum(context, ids.size - 1 - chunk)  # the last window may be short
        width = int(lengths.max())
        inputs = np.zeros((chunk.size, width), dtype=np.int64)
        targets = np.full((chunk.size, width), -100, dtype=np.int64)
        for row, (start, length) in enumerate(zip(chunk, lengths)):
            inputs[row, :length] = ids[start:start + length]
            targets[row, :length] = ids[start + 1:start + 1 + length]
        x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-100,
                               reduction="sum")
        total += float(loss)
        count += int(lengths.sum())
    model.train(was_training)
    return Perplexity(nll=total / count, tokens=count)
