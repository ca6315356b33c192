"""A GPT-1-style decoder-only transformer (post-embedding dropout, pre-norm blocks, learned positions).

GPT-1 used post-layer-norm blocks; we use pre-norm (as GPT-2 and most later models) because it trains
stably at the paper's lr 3e-4 without warmup. Parameter counts are unaffected.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import ModelConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape  # [B, T, C]
        q, k, v = self.qkv(x).split(width, dim=2)
        # [B, T, C] -> [B, heads, T, C/heads]
        q, k, v = (t.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(batch, time, width)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_ff = nn.LayerNorm(config.d_model, bias=config.bias)
        self.ff = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.ff(self.ln_ff(x))


class GPT(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, V]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the token store) before building a model")
        self.config = self.spec = config  # .spec: the name every model family answers to
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat with depth.
        for name, param in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Unique trainable parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(self.hidden(ids)))  # [B, T, V]

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The last block's output [B, T, C], before `ln_f` and `head` (the dump runs those in float32)."""
        batch, time = ids.shape
        if time > self.config.context:
            raise ValueError(f"sequence of {time} tokens exceeds the model's context {self.config.context}")
        positions = torch.arange(time, device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # [B, T, C]
        for block in self.blocks:
            x = block(x)
        return x

    def flops_per_token(self) -> int:
        """Forward FLOPs per token: 2 * (non-embedding params + head) + attention scores (PaLM's estimate)."""
        c = self.config
        matmul_params = c.n_layer * (4 * c.d_model ** 2 + 2 * c.d_model * c.d_ff) + c.d_model * c.vocab_size
        return 2 * matmul_params + 2 * c.n_layer * c.context * c.d_model
