"""PersistenceTransformer: a small causal transformer that scores a track at every step.

Features -> MLP -> + time encoding (of the track's age in seconds) -> pre-norm transformer
encoder with a causal mask (step k sees steps <= k only) -> per-step logit of "this track follows
a real, persistent object". Causal, so it runs online: a new row never changes earlier scores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .features import N_FEATURES


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = N_FEATURES
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    max_len: int = 64  # steps of history scored (older rows are dropped)

    def as_dict(self) -> dict:
        return asdict(self)


class TimeEncoding(nn.Module):
    """Sinusoidal encoding of a continuous time (seconds since the track's birth)."""

    def __init__(self, d_model: int, min_period: float = 0.02, max_period: float = 20.0):
        super().__init__()
        n = d_model // 2
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), n)
        self.register_buffer("freq", 2 * math.pi / periods, persistent=False)
        self.d_model = d_model

    def forward(self, age: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, d_model)
        a = age[..., None] * self.freq
        enc = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
        if enc.shape[-1] < self.d_model:
            enc = torch.nn.functional.pad(enc, (0, self.d_model - enc.shape[-1]))
        return enc


class PersistenceTransformer(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config
        self.config = c
        self.embed = nn.Sequential(nn.Linear(c.n_features, c.d_model), nn.GELU(), nn.Linear(c.d_model, c.d_model))
        self.time = TimeEncoding(c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, 1)
        causal = torch.triu(torch.full((c.max_len, c.max_len), float("-inf")), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, feats: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """feats (B, L, F), age_s (B, L) seconds -> logits (B, L). Rows after a track's length
        may hold anything: with the causal mask they never reach earlier steps."""
        L = feats.shape[1]
        if L > self.config.max_len:
            raise ValueError(f"history of {L} steps: the model takes at most {self.config.max_len}")
        z = self.embed(feats) + self.time(age_s)
        z = self.encoder(z, mask=self.causal[:L, :L], is_causal=True)
        return self.head(self.norm(z))[..., 0]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
