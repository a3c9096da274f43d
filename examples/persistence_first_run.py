"""Build labelled track histories from sim scenes, train a small PersistenceTransformer on the CPU
and report how well it separates real objects from distractors by track age (held-out seeds).

    python examples/persistence_first_run.py        # about 4 minutes on 2 cores

This is the exploratory run quoted in the notes of issue 6; the shipped filter and its command
(`tracker3d persistence train`) are still to come.
"""
import time

import numpy as np
import torch

from persistence.model import ModelConfig
from persistence.train import TrainConfig, roc_auc, scores_by_age, train
from tracker3d.persistence_data import KINDS, build

torch.manual_seed(0)
scenes = ("default", "cluttered", "swarm", "walkers", "throws")
t = time.perf_counter()
train_set = build(scenes, range(100, 106), seconds=10)  # splits by seed: no scene is shared
val_set = build(scenes, range(200, 202), seconds=10)
test_set = build(scenes, range(300, 303), seconds=10)
print(f"data: {len(train_set)}/{len(val_set)}/{len(test_set)} tracks in {time.perf_counter() - t:.0f} s")
t = time.perf_counter()
res = train(train_set, val_set, ModelConfig(d_model=32, n_layers=2, d_ff=64, n_heads=4),
            TrainConfig(epochs=30, batch_size=128, lr=2e-3, patience=6))
print(f"trained in {time.perf_counter() - t:.0f} s, best epoch {res.best_epoch}")
for age, (s, y, k) in scores_by_age(res.model, test_set).items():
    keep = s >= 0.5
    rejected = {KINDS[c]: round(float((~keep[k == c]).mean()), 3) for c in np.unique(k) if KINDS[c] != "object"}
    print(f"age {age:2d}: AUC {roc_auc(s, y):.3f}  accuracy {(keep == (y == 1)).mean():.3f}  "
          f"real kept {keep[y == 1].mean():.3f}  rejected {rejected}")
