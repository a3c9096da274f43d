"""The learned persistence gate (TrackPersistenceFilter) and a simple scoring API (PersistenceFilter).

TrackPersistenceFilter is what the pipeline calls once per frame with the live 2D tracks of both
cameras. It keeps each track's transformer keys and values, so a frame costs one batched step
over the tracks' new rows (usually one each), not a pass over whole histories; the scores equal a
full causal forward pass over the newest `max_len` steps. A track enters the persistent set when
its score reaches `on` and leaves it when the score falls below `off` (hysteresis); once it has
been persistent for `latch_s` seconds it stays so for the rest of its life (the gate decides
confirmation; ending tracks is the tracker's job: a model judged on young tracks revoked long,
real tracks at merges and 2D ID switches and cost 3D IDF1). A latched track is not scored again
(its score stays the one it latched with): nothing its score could do would change a decision,
so a frame's cost follows the undecided tracks, not every live one.
"""
from __future__ import annotations

import heapq
import logging
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from . import checkpoint
from .features import NEWEST3, check_history, features, row_features
from .gate import pad_histories
from .model import PersistenceTransformer
from .steppers import BUCKETS, NUMPY_MAX, CpuStep, CudaGraphStep, TorchStep, time_step

log = logging.getLogger(__name__)


def _newest3(hist: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, L, 7) histories -> (7, 3, N): columns x (row before the previous, previous, newest) x
    tracks, contiguous (a young track's first row stands in for the rows it lacks)."""
    N, L = hist.shape[:2]
    idx = np.maximum(lengths + NEWEST3[:, None] - 1, 0)  # (3, N)
    if hist.flags.c_contiguous:  # one gather of whole rows
        w = hist.reshape(N * L, 7).take(idx + np.arange(0, N * L, L), axis=0)
    else:
        w = hist[np.arange(N), idx]
    return np.ascontiguousarray(w.transpose(2, 0, 1))


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; asking for cuda without one falls back (logged)."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("persistence gate: device %s requested but torch sees no GPU; using the CPU", name)
        return torch.device("cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _check_thresholds(on: float, off: float) -> None:
    if not (0.0 <= off <= on <= 1.0):
        raise ValueError(f"thresholds on={on}, off={off}: expected 0 <= off <= on <= 1")


class TrackPersistenceFilter:
    """Gate: (ids (N,), hist (N, L, 7), lengths (N,), image_size) -> (persistent (N,), score (N,)).

    `image_size` is (W, H) pixels for all tracks or an (N, 2) array; rows of a track that the
    filter has already scored are recognised by their time, so every call may pass whole
    histories. `forget(ids)` drops removed tracks' state. On a GPU the step runs in CUDA graphs
    (`cuda_graphs`), as one Triton kernel where Triton imports (`fused`: None = then, False =
    never; the torch step otherwise).
    """

    def __init__(self, weights: Optional[str] = None, on: Optional[float] = None, off: Optional[float] = None,
                 device: str = "auto", image_size: Optional[tuple[int, int]] = None,
                 model: Optional[PersistenceTransformer] = None, latch_s: float = 0.5,
                 cuda_graphs: bool = True, numpy_max: int = NUMPY_MAX, fused: Optional[bool] = None):
        if model is None:
            model, card = checkpoint.load(weights, "cpu")
        else:
            card = {"on": 0.5, "off": 0.3}
        self.card = card
        self.model = model.eval().cpu()
        self.on = float(card["on"] if on is None else on)
        # With only `on` given, keep the model's hysteresis gap below it.
        gap = float(card["on"]) - float(card["off"])
        self.off = float(card["off"] if on is None else max(0.0, self.on - gap)) if off is None else float(off)
        _check_thresholds(self.on, self.off)
        if not latch_s >= 0:
            raise ValueError(f"latch_s {latch_s}: expected >= 0 seconds")
        self.latch_s = float(latch_s)
        self.image_size = image_size
        self.fallbacks = 0  # times a GPU failure moved the gate to the CPU
        self._slot_of: dict[int, int] = {}
        self._free: list[int] = []  # a min-heap of free cache slots
        self._last_ids: Optional[np.ndarray] = None  # the previous call's ids and slots (reused when equal)
        self._last_slots = np.zeros(0, np.int64)
        # Per cache slot: steps scored, time of the last scored row, birth time, time of the last
        # observed row, last score, persistent.
        self._pos = np.zeros(0, np.int64)
        self._t_scored = np.zeros(0)
        self._t_birth = np.zeros(0)
        self._t_obs = np.zeros(0)
        self._score = np.zeros(0)
        self._persist = np.zeros(0, bool)
        self._latched = np.zeros(0, bool)  # persistent for the rest of its life: no longer scored
        self._t_on = np.zeros(0)  # time the current persistent spell began
        self._cpu = CpuStep(self.model, 64, numpy_max)
        self._gpu: Optional[TorchStep] = None
        self._step: TorchStep = self._cpu
        self._prefer: list[tuple[int, str]] = [(0, "cpu")]  # (up to this many tracks, stepper); 0 = any
        self._want, self._want_frames = "cpu", 0
        self._grow(64)
        name = str(device)
        if name not in ("auto", "cpu") and not name.startswith("cuda"):
            raise ValueError(f"device {name!r}: expected auto, cpu or cuda[:N]")
        if name != "cpu":
            if not torch.cuda.is_available():
                (log.info if name == "auto" else log.warning)(
                    "persistence gate: device %s: torch sees no GPU; using the CPU", name)
            else:
                dev = torch.device("cuda" if name == "auto" else name)
                self._gpu = (CudaGraphStep(self.model, dev, 64, fused=fused) if cuda_graphs
                             else TorchStep(self.model, dev, 64))
                if name == "auto":
                    self._measure()
                else:
                    self._prefer = [(0, "cuda")]
                    self._step = self._gpu
                    self._want = "cuda"
        self.device = self._step.device
        self._warm_up()

    # A measured preference switches the stepper after this many frames in a row (a count that
    # hovers at a boundary does not move the cache back and forth).
    SWITCH_AFTER = 30
    MEASURE_UP_TO = 1024  # tracks; larger counts follow the largest measured bucket

    def _measure(self) -> None:
        """Time a step on the CPU and on the GPU for each bucket of track counts and keep, per
        bucket, the faster one (logged)."""
        rows, prefer = [], []
        for b in BUCKETS:
            if b > self.MEASURE_UP_TO:
                break
            tc = time_step(self._cpu, b)
            tg = time_step(self._gpu, b)
            pick = "cuda" if tg < tc else "cpu"
            prefer.append((b, pick))
            rows.append(f"{b}: cpu {tc * 1e3:.2f} ms, {self._gpu.device} {tg * 1e3:.2f} ms -> {pick}")
        prefer[-1] = (0, prefer[-1][1])
        self._prefer = prefer
        self._want = prefer[0][1]
        self._step = self._gpu if self._want == "cuda" else self._cpu
        log.info("persistence gate: device auto: one step measured per track count (up to N tracks): %s; "
                 "starting on %s", "; ".join(rows), self._step.device)

    def _preferred(self, n: int) -> str:
        for b, name in self._prefer:
            if n <= b or b == 0:
                return name
        return self._prefer[-1][1]

    def _choose(self, n: int) -> None:
        """Follow the measured preference for n tracks, SWITCH_AFTER frames after it changes."""
        want = self._preferred(n)
        if self._gpu is None or want == ("cuda" if self._step is self._gpu else "cpu"):
            self._want_frames = 0
            return
        self._want_frames = self._want_frames + 1 if want == self._want else 1
        self._want = want
        if self._want_frames >= self.SWITCH_AFTER:
            self._move_to(self._gpu if want == "cuda" else self._cpu)
            log.info("persistence gate: %d tracks: moved to %s (faster at this count at start-up)", n, self.device)

    def _move_to(self, stepper: TorchStep) -> None:
        if stepper is not self._step:
            stepper.load(self._step.k, self._step.v, len(self._pos))
            self._step = stepper
        self.device = stepper.device
        self._want_frames = 0

    def _warm_up(self) -> None:
        """Score a dummy track once, so that the first real frame does not pay torch's first-call
        costs (a latency spike of tens of ms in a live loop)."""
        h = np.zeros((1, 3, 7))
        h[0, :, 0] = [0.0, 1 / 30, 2 / 30]
        h[0, :, 1:7] = [10.0, 10.0, 5.0, 5.0, 0.5, 1.0]
        for n in (1, 2, 3):
            self(np.array([-1]), h, np.array([n]), image_size=(64, 64))
        self.forget([-1])

    def __repr__(self) -> str:
        c = self.model.config
        return (f"TrackPersistenceFilter(d_model={c.d_model}, layers={c.n_layers}, on={self.on}, off={self.off}, "
                f"device={self.device.type})")

    def update_thresholds(self, on: float, off: Optional[float] = None) -> None:
        off = min(self.off, on) if off is None else off
        _check_thresholds(on, off)
        self.on, self.off = float(on), float(off)

    def forget(self, ids: Iterable[int]) -> None:
        ids = [int(i) for i in ids]
        for i in ids:
            slot = self._slot_of.pop(i, None)
            if slot is not None:
                heapq.heappush(self._free, slot)
        if self._last_ids is not None and ids:  # the last call's ids stay a subset of _slot_of
            keep = ~np.isin(self._last_ids, np.array(ids, np.int64))
            self._last_ids, self._last_slots = self._last_ids[keep], self._last_slots[keep]

    def reset(self) -> None:
        self.forget(list(self._slot_of))

    def _grow(self, capacity: int) -> None:
        old = len(self._pos)
        self._step.grow(capacity)
        extra = capacity - old
        self._pos = np.r_[self._pos, np.zeros(extra, np.int64)]
        for name in ("_t_scored", "_t_birth", "_t_obs", "_score", "_t_on"):
            setattr(self, name, np.r_[getattr(self, name), np.zeros(extra)])
        self._persist = np.r_[self._persist, np.zeros(extra, bool)]
        self._latched = np.r_[self._latched, np.zeros(extra, bool)]
        self._free.extend(range(old, capacity))
        heapq.heapify(self._free)

    def _slots(self, ids: np.ndarray, hist: np.ndarray) -> np.ndarray:
        last = self._last_ids
        if last is not None and last.shape == ids.shape and (last == ids).all():
            return self._last_slots
        slots = np.empty(len(ids), np.int64)
        todo = np.arange(len(ids))
        if last is not None and len(last) and len(ids):
            # The ids of the last call (most of a frame's: 2D tracks live on) take their slots in
            # one lookup; the others (new tracks) go through the dictionary, in order.
            order = np.argsort(last, kind="stable")
            known = last[order]
            pos = np.minimum(np.searchsorted(known, ids), len(last) - 1)
            found = known[pos] == ids
            slots[found] = self._last_slots[order[pos[found]]]
            todo = np.flatnonzero(~found)
        new = []
        for k, i in zip(todo.tolist(), ids[todo].tolist()):
            s = self._slot_of.get(i)
            if s is None:
                if not self._free:
                    self._grow(2 * len(self._pos))
                s = heapq.heappop(self._free)  # the lowest: the slots in use stay packed
                self._slot_of[i] = s
                new.append(k)
            slots[k] = s
        if new:
            ns = slots[new]
            self._pos[ns] = 0
            self._t_scored[ns] = -np.inf
            self._t_birth[ns] = hist[new, 0, 0]
            self._t_obs[ns] = -np.inf
            self._score[ns] = 0.0
            self._persist[ns] = False
            self._latched[ns] = False
            self._t_on[ns] = np.inf
        if len(np.unique(slots)) == len(slots):  # repeated ids are scored, never reused
            self._last_ids, self._last_slots = ids.copy(), slots
        else:
            self._last_ids = None
        return slots

    def __call__(self, ids: np.ndarray, hist: np.ndarray, lengths: np.ndarray,
                 image_size=None) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, np.int64)
        lengths = np.asarray(lengths, np.int64)
        n = len(ids)
        if n == 0:
            return np.zeros(0, bool), np.zeros(0)
        size = image_size if image_size is not None else self.image_size
        if size is None:
            raise ValueError("TrackPersistenceFilter: image_size (W, H) pixels is needed to normalise positions")
        size = np.asarray(size, np.float64).reshape(-1, 2)
        if len(size) not in (1, n):
            raise ValueError(f"TrackPersistenceFilter: image_size: expected (W, H) or ({n}, 2) pixels, got {len(size)} rows")
        hist = np.asarray(hist, np.float64)
        if hist.ndim != 3 or hist.shape[0] != n or lengths.shape != (n,) or not (
                1 <= lengths.min() and lengths.max() <= hist.shape[1]):
            raise ValueError(f"TrackPersistenceFilter: expected hist (N, L, 7) and lengths (N,) in 1..L for {n} ids, "
                             f"got hist {hist.shape}, lengths {lengths.shape} from {lengths.min(initial=0)} to "
                             f"{lengths.max(initial=0)}")
        slots = self._slots(ids, hist)
        try:
            self._score_new(slots, hist, lengths, size)
        except Exception as e:
            if self.device.type == "cpu" or not _is_oom(e):
                raise
            log.warning("persistence gate: GPU out of memory with %d tracks; moving the gate to the CPU", n)
            self.fallbacks += 1
            self._move_to(self._cpu)
            self._gpu, self._prefer = None, [(0, "cpu")]
            self._score_new(slots, hist, lengths, size)
        return self._persist[slots], self._score[slots]

    def _score_new(self, slots, hist, lengths, size) -> None:
        """Score each track's unscored rows. The common case, one new row per track (or none),
        takes few numpy passes over each track's newest three rows; several new rows for some
        track take _score_rows."""
        N = len(slots)
        win = _newest3(hist, lengths)
        t_sc = self._t_scored[slots]
        t_last = win[0, 2]
        new = (t_last > t_sc) & ~self._latched[slots]
        # Time never decreases along a history, so the unscored rows are the newest ones.
        one = new & ((win[0, 1] <= t_sc) | (lengths == 1))
        if not one.all():
            if (new & ~one).any():
                self._score_rows(slots, hist, lengths, np.broadcast_to(size, (N, 2)))
                return
            todo = np.flatnonzero(one)
            if not len(todo):
                return
            slots, win, lengths, t_last = slots[todo], win[:, :, todo], lengths[todo], t_last[todo]
            size = size if len(size) == 1 else size[todo]
        self._choose(len(slots))
        t_birth = self._t_birth[slots]
        pos = self._pos[slots]
        young = lengths < 3
        has1, has2 = (lengths >= 2, ~young) if young.any() else (None, None)
        f, t_obs = row_features(win, size, t_birth, self._t_obs[slots], has1, has2)
        last = self._step.step(f, (t_last - t_birth).astype(np.float32), slots, pos)
        self._t_obs[slots] = t_obs
        self._t_scored[slots] = t_last
        self._pos[slots] = pos + 1
        self._score[slots] = last
        self._hysteresis(slots, t_last, last)

    def _hysteresis(self, slots: np.ndarray, t_last: np.ndarray, last: np.ndarray) -> None:
        was = self._persist[slots]
        t_on = self._t_on[slots]
        latched = was & (self.latch_s > 0) & (t_last - t_on >= self.latch_s)
        now = latched | (last >= np.where(was, self.off, self.on))
        t_on = np.where(now & ~was, t_last, np.where(now, t_on, np.inf))
        self._t_on[slots] = t_on
        self._persist[slots] = now
        if self.latch_s > 0:  # from the next row on, persistent whatever the score: not scored
            self._latched[slots] = now & (t_last - t_on >= self.latch_s)

    def _score_rows(self, slots, hist, lengths, size) -> None:
        """Score each track's unscored rows, any number per track (a step per row)."""
        N, L = hist.shape[:2]
        rows = np.arange(N)
        t_sc = self._t_scored[slots]
        t_last = hist[rows, lengths - 1, 0]
        # Time never decreases along a history, so the unscored rows are the newest ones: usually
        # just the last (counted in full only for the tracks with more).
        new = (t_last > t_sc) & ~self._latched[slots]
        one = new & ((lengths == 1) | (hist[rows, np.maximum(lengths - 2, 0), 0] <= t_sc))
        n_new = one.astype(np.int64)
        more = np.flatnonzero(new & ~one)
        if len(more):
            live = np.arange(L)[None, :] < lengths[more, None]
            n_new[more] = np.count_nonzero(live & (hist[more, :, 0] > t_sc[more, None]), axis=1)
        todo = np.flatnonzero(n_new)
        if not len(todo):
            return
        if len(todo) < N:
            slots, hist, lengths, size, n_new = slots[todo], hist[todo], lengths[todo], size[todo], n_new[todo]
            t_last = t_last[todo]
        n = len(slots)
        self._choose(n)
        # Windows of each track's new rows plus two rows of context before them (rates and
        # accelerations need them), left-aligned: a young track has fewer context rows.
        m = int(n_new.max())
        start = lengths - n_new - 2
        shift = np.maximum(-start, 0)
        idx = np.maximum(start, 0)[:, None] + np.arange(m + 2)[None, :]
        win = hist[np.arange(n)[:, None], np.minimum(idx, L - 1)]
        wlen = n_new + 2 - shift  # rows past a track's newest one are padding
        t_birth = self._t_birth[slots]
        t_obs = self._t_obs[slots]
        pos = self._pos[slots]
        f = features(win, wlen, size, t_birth=t_birth, t_last_obs=t_obs)
        age = (win[..., 0] - t_birth[:, None]).astype(np.float32)
        last = np.zeros(n)
        for s in range(m):
            sel = np.flatnonzero(n_new > s)
            col = 2 - shift[sel] + s  # the window row of this new step
            last[sel] = self._step.step(f[sel, col], age[sel, col], slots[sel], pos[sel] + s)
        # The new rows sit at window columns 2 - shift .. wlen - 1.
        cols = np.arange(m + 2)[None, :]
        new_obs = (cols >= (2 - shift)[:, None]) & (cols < wlen[:, None]) & (win[:, :, 6] > 0)
        t_obs = np.maximum(t_obs, np.where(new_obs, win[:, :, 0], -np.inf).max(axis=1))
        self._t_obs[slots] = t_obs
        self._t_scored[slots] = t_last
        self._pos[slots] = pos + n_new
        self._score[slots] = last
        self._hysteresis(slots, t_last, last)


def _history_of(track: Any, where: str) -> np.ndarray:
    h = getattr(track, "history", track)
    return check_history(h, where)


class PersistenceFilter:
    """Score and filter tracks by their histories, statelessly: each call scores every track's
    newest step from its whole history (the same score TrackPersistenceFilter gives online).

    A track is an (n, 7) array of rows [t, cx, cy, w, h, score, observed] (oldest first) or any
    object with such a `history` attribute (e.g. tracker3d's Track2D). image_size: (W, H) pixels.
    """

    def __init__(self, image_size: tuple[int, int], weights: Optional[str] = None,
                 threshold: Optional[float] = None, device: str = "auto"):
        self.device = pick_device(device)
        self.model, self.card = checkpoint.load(weights, self.device)
        self.image_size = tuple(image_size)
        self.threshold = float(self.card["on"] if threshold is None else threshold)
        self.update_threshold(self.threshold)

    def update_threshold(self, value: float) -> None:
        """Set the score a track needs to pass (0..1)."""
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"threshold {value}: expected a probability in [0, 1]")
        self.threshold = float(value)

    def get_persistence_scores(self, tracks: Sequence[Any]) -> np.ndarray:
        """(N,) probability that each track follows a real, persistent object."""
        if len(tracks) == 0:
            return np.zeros(0)
        hs = [_history_of(tr, f"track {i}") for i, tr in enumerate(tracks)]
        hist, lens = pad_histories(hs)
        f = features(hist, lens, self.image_size)
        age = (hist[..., 0] - hist[:, :1, 0]).astype(np.float32)
        out = np.zeros(len(hs))
        with torch.inference_mode():
            for n in np.unique(lens):  # one pass per length: the last step is at n - 1
                sel = np.flatnonzero(lens == n)
                ft = torch.from_numpy(f[sel, :n]).to(self.device)
                at = torch.from_numpy(age[sel, :n]).to(self.device)
                out[sel] = torch.sigmoid(self.model(ft, at)[:, -1]).cpu().numpy()
        return out

    def filter_tracks(self, tracks: Sequence[Any]) -> list:
        """The tracks whose score reaches the threshold, in their order."""
        s = self.get_persistence_scores(tracks)
        return [tr for tr, v in zip(tracks, s) if v >= self.threshold]

    def batch_filter_tracks(self, batches: Sequence[Sequence[Any]]) -> list[list]:
        """filter_tracks for several lists (e.g. cameras or frames) with one scoring pass."""
        flat = [tr for b in batches for tr in b]
        s = self.get_persistence_scores(flat)
        out, k = [], 0
        for b in batches:
            out.append([tr for tr, v in zip(b, s[k:k + len(b)]) if v >= self.threshold])
            k += len(b)
        return out
