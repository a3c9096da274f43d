"""Score 2D tracks with the shipped persistence model: real objects' tracks against flashes and
clutter on a sim scene that no training split used, by track age.

    python examples/persistence_scores.py        # about 10 s
"""
import numpy as np

from persistence import PersistenceFilter
from persistence.data import KINDS
from tracker3d.sim import get_scene
from tracker3d.sim.gate_data import collect

tracks = collect(get_scene("cluttered").with_(seconds=6.0), seed=777)  # our detector + 2D tracker, GT labels
pf = PersistenceFilter(image_size=(640, 480))
print(f"{len(tracks)} tracks; threshold {pf.threshold:.2f}")
for age in (1, 2, 3, 5):
    idx = np.flatnonzero(tracks.lengths >= age)
    scores = pf.get_persistence_scores([tracks.hist[i, :age] for i in idx])  # only the first `age` rows
    kinds = tracks.kind[idx]
    means = ", ".join(f"{KINDS[k]} {scores[kinds == k].mean():.2f}" for k in np.unique(kinds))
    kept = pf.filter_tracks([tracks.hist[i, :age] for i in idx])
    print(f"age {age}: mean score by kind: {means}; {len(kept)}/{len(idx)} pass")
