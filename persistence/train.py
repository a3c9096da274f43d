"""Training and evaluation of the PersistenceTransformer on labelled track histories.

Every step of every track is a training target (the track's label), so the model learns to
decide at any age; the loss and the evaluation weigh tracks by age, never by their full length
(a real object's young track and a flash have the same length at the same age).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .features import features
from .model import ModelConfig, PersistenceTransformer

log = logging.getLogger(__name__)

EVAL_AGES = (1, 2, 3, 5, 10)  # steps since birth


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6  # epochs without validation improvement before stopping
    max_age_steps: int = 32  # steps per track that carry loss (later ones are easy)
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainResult:
    model: PersistenceTransformer
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf


def tensors(hist: np.ndarray, lengths: np.ndarray, image_size: tuple[int, int], max_len: int):
    """Model inputs for histories (N, L, 7): features (N, L', F), age in seconds (N, L'), mask (N, L')."""
    hist = hist[:, :max_len]
    lengths = np.minimum(lengths, max_len)
    f = torch.from_numpy(features(hist, lengths, image_size))
    age = hist[..., 0] - hist[:, :1, 0]
    mask = torch.from_numpy(np.arange(hist.shape[1])[None, :] < lengths[:, None])
    return f, torch.from_numpy(age.astype(np.float32)) * mask, mask


def _loss(model, f, age, mask, y, max_age_steps: int, pos_weight: float) -> torch.Tensor:
    logits = model(f, age)
    L = logits.shape[1]
    keep = mask.clone()
    keep[:, max_age_steps:] = False
    target = y[:, None].expand(-1, L).float()
    w = torch.where(target > 0, torch.full_like(target, pos_weight), torch.ones_like(target))
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, weight=w, reduction="none")
    return (loss * keep).sum() / keep.sum().clamp(min=1)


def train(train_set, val_set, model_config: ModelConfig = ModelConfig(), config: TrainConfig = TrainConfig(),
          progress: Optional[Callable] = None, on_epoch: Optional[Callable[[dict], None]] = None) -> TrainResult:
    """Train with AdamW and early stopping on the validation loss; returns the best weights.
    train_set/val_set: objects with hist, lengths, label, image_size (persistence_data.TrackSet)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dev = torch.device(config.device)
    model = PersistenceTransformer(model_config).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ft, at, mt = (x.to(dev) for x in tensors(train_set.hist, train_set.lengths, train_set.image_size,
                                             model_config.max_len))
    fv, av, mv = (x.to(dev) for x in tensors(val_set.hist, val_set.lengths, val_set.image_size, model_config.max_len))
    yt = torch.from_numpy(train_set.label).to(dev)
    yv = torch.from_numpy(val_set.label).to(dev)
    pos = float(max(1, (train_set.label == 1).sum()))
    neg = float(max(1, (train_set.label == 0).sum()))
    pos_weight = neg / pos  # balance the classes per step
    result = TrainResult(model)
    best_state = None
    stale = 0
    epochs = range(config.epochs)
    for epoch in (progress(epochs) if progress else epochs):
        model.train()
        order = rng.permutation(len(yt))
        total, n = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            b = torch.from_numpy(order[i:i + config.batch_size]).to(dev)
            loss = _loss(model, ft[b], at[b], mt[b], yt[b], config.max_age_steps, pos_weight)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(b)
            n += len(b)
        model.eval()
        with torch.no_grad():
            val = float(_loss(model, fv, av, mv, yv, config.max_age_steps, pos_weight))
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val}
        result.history.append(row)
        if on_epoch:
            on_epoch(row)
        if val < result.best_val_loss - 1e-5:
            result.best_val_loss, result.best_epoch, stale = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                log.info("early stop at epoch %d (best %d)", epoch, result.best_epoch)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def scores_by_age(model: PersistenceTransformer, data, ages=EVAL_AGES, device: str = "cpu") -> dict[int, tuple]:
    """{age: (scores, labels, kinds)} of the tracks that reached that age (steps since birth, 1 = the
    first row), each scored with only its first `age` rows."""
    f, a, m = tensors(data.hist, data.lengths, data.image_size, model.config.max_len)
    with torch.inference_mode():
        p = torch.sigmoid(model(f.to(device), a.to(device))).cpu().numpy()
    out = {}
    for age in ages:
        ok = data.lengths >= age
        out[age] = (p[ok, age - 1], data.label[ok], data.kind[ok])
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U), NaN with one class only."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = np.empty(len(allv))
    order = np.argsort(allv, kind="mergesort")
    ranks[order] = np.arange(1, len(allv) + 1)
    # average ranks for ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
