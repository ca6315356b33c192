"""A stacked-LSTM language model, the kind of "old" architecture the factory family trains as a student.

superstill assumes nothing of a student but ids [B, T] -> logits [B, T, V] (see examples/README.md), so a
recurrent network distils from the same teacher store as the transformers do. From the repository root
(the factory's module is imported from the Python path or the working directory):

    pipeline train-student --tokens T --out RUN --preset tiny-student \\
        --set model.family=factory --set model.factory=examples.lstm_model:build \\
        --set model.options.width=128

`--preset tiny-student` supplies the context and training settings (a change of family keeps only the
preset's context); every `--set model.options.NAME=VALUE` becomes a keyword argument of `build` below, and
the vocabulary size always comes from the token store.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class LSTMLanguageModel(nn.Module):
    """Embedding -> dropout -> stacked LSTM (dropout between layers) -> dropout -> linear head, with a bias, over
    the vocabulary."""

    def __init__(self, vocab_size: int, width: int, layers: int, dropout: float, tie: bool):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width)
        self.drop = nn.Dropout(dropout)
        # torch applies `dropout` only between layers (and warns when there is a single layer).
        self.lstm = nn.LSTM(width, width, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        # A bias per word carries the unigram distribution at once: the LSTM's outputs lie in (-1, 1), so the
        # tied matrix alone needs many steps to grow logits that far apart (without it: unigram perplexity
        # after 220 steps of the README's example run).
        self.head = nn.Linear(width, vocab_size, bias=True)
        nn.init.zeros_(self.head.bias)
        # +-0.1 as the classic LSTM language models (Zaremba et al. 2014): inputs large enough to drive the
        # gates, logits still near uniform under a tied head.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if tie:  # one matrix reads and writes tokens (Press & Wolf 2017): fewer parameters, better perplexity
            self.head.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)
        for name, bias in self.lstm.named_parameters():
            if name.startswith("bias_ih"):  # forget gate (2nd quarter) open at first: gradients survive long windows
                nn.init.zeros_(bias)
                bias.data[width:2 * width] = 1.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.drop(self.embedding(ids)))  # each window starts from a zero state
        return self.head(self.drop(hidden))  # [B, T, V]


def build(vocab_size: int, width: int = 256, layers: int = 2, dropout: float = 0.1, tie: bool = True) -> nn.Module:
    """The factory superstill calls, as build(vocab_size=V, **model.options): an untrained LSTM language model."""
    if width < 1 or layers < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError(f"lstm_model.build: width and layers must be >= 1 and dropout in [0, 1), got "
                         f"width={width}, layers={layers}, dropout={dropout}")
    return LSTMLanguageModel(vocab_size, width, layers, dropout, tie)
