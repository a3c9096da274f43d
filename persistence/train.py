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
    max_age_steps: int = 64  # steps per track that carry loss: the whole attention window, so that
    # long-lived tracks keep their score (trained on 24 steps only, scores drifted after them)
    seed: int = 0
    device: str = "cpu"
    checkpoint: Optional[str] = None  # path: the best weights so far are saved there every epoch


@dataclass
class TrainResult:
    model: PersistenceTransformer
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf


def tensors(hist: np.ndarray, lengths: np.ndarray, image_size, max_len: int):
    """Model inputs for histories (N, L, 7) that start at each track's birth: features (N, L', F),
    age in seconds (N, L'), mask (N, L'). image_size (W, H) or (N, 2) pixels."""
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
    train_set/val_set: objects with hist, lengths, label, image_size (tracker3d.sim.gate_data.TrackSet)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dev = torch.device(config.device)
    model = PersistenceTransformer(model_config).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Cosine decay over the planned epochs: late epochs refine instead of bouncing around.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.epochs, 1), eta_min=config.lr * 0.02)
    # Only the first max_age_steps steps carry loss and the model is causal: later steps need not run.
    steps = min(model_config.max_len, config.max_age_steps)
    ft, at, mt = (x.to(dev) for x in tensors(train_set.hist, train_set.lengths, train_set.image_size, steps))
    fv, av, mv = (x.to(dev) for x in tensors(val_set.hist, val_set.lengths, val_set.image_size, steps))
    yt = torch.from_numpy(train_set.label).to(dev)
    yv = torch.from_numpy(val_set.label).to(dev)
    # Balance the classes by the steps that carry loss (real tracks live longer).
    steps_per = np.minimum(train_set.lengths, steps)
    pos = float(max(1, steps_per[train_set.label == 1].sum()))
    neg = float(max(1, steps_per[train_set.label == 0].sum()))
    pos_weight = neg / pos
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
        sched.step()
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
            if config.checkpoint:
                torch.save({"epoch": epoch, "config": model_config.as_dict(), "state_dict": best_state},
                           config.checkpoint)
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


def f1_score(pred: np.ndarray, labels: np.ndarray) -> float:
    tp = np.count_nonzero(pred & (labels == 1))
    fp = np.count_nonzero(pred & (labels == 0))
    fn = np.count_nonzero(~pred & (labels == 1))
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def report_by_age(by_age: dict[int, tuple], threshold: float, kinds: tuple[str, ...]) -> list[dict]:
    """One row per age: tracks, ROC-AUC, accuracy and F1 at the threshold, the share of real
    tracks kept and of each distractor kind rejected (kind name -> share)."""
    rows = []
    for age, (s, y, k) in by_age.items():
        keep = s >= threshold
        row = {"age": int(age), "tracks": int(len(y)), "auc": roc_auc(s, y),
               "accuracy": float((keep == (y == 1)).mean()) if len(y) else float("nan"),
               "f1": f1_score(keep, y), "real_kept": float(keep[y == 1].mean()) if (y == 1).any() else float("nan")}
        for c in np.unique(k):
            if y[k == c].max(initial=0) == 0:  # a distractor kind
                row[f"{kinds[c]}_rejected"] = float((~keep[k == c]).mean())
                row[f"{kinds[c]}_n"] = int((k == c).sum())
        rows.append(row)
    return rows


def choose_threshold(by_age: dict[int, tuple], ages=(2, 3, 5)) -> float:
    """The score threshold with the best mean accuracy over these ages (validation data)."""
    grid = np.linspace(0.05, 0.95, 91)
    acc = [np.mean([((by_age[a][0] >= g) == (by_age[a][1] == 1)).mean() for a in ages if a in by_age]) for g in grid]
    return float(grid[int(np.argmax(acc))])
