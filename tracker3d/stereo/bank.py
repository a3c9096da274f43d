"""Many 3D Kalman filters as stacked arrays: states x (n, dim) and covariances P (n, dim, dim),
predicted together and updated together for any subset of rows.

Units are the caller's (the 3D tracker: camera 0 frame, metres, seconds). The arithmetic is
filterpy's KalmanFilter, operation for operation, so each row equals the per-track filter it
replaces (tests/test_track3d_bank.py holds it to 1e-9 against filterpy): predict x = F x,
P = F P F' + Q; a position update (H = [I 0]) in Joseph form P = (I-KH) P (I-KH)' + K R K'.
A linearised (extended Kalman) update takes the innovation and Jacobian from the caller.
"""
from __future__ import annotations

import numpy as np


class BankRow:
    """One filter's state with filterpy's shapes (x (dim, 1), P (dim, dim)): a view of its bank
    row while the track lives, its own copy once the bank let it go (a finished track)."""

    __slots__ = ("bank", "row", "_x", "_P")

    def __init__(self, bank: "KalmanBank", row: int):
        self.bank: KalmanBank | None = bank
        self.row = row
        self._x: np.ndarray | None = None
        self._P: np.ndarray | None = None

    @property
    def x(self) -> np.ndarray:
        return self.bank.x[self.row][:, None] if self.bank is not None else self._x

    @x.setter
    def x(self, value: np.ndarray) -> None:
        if self.bank is not None:
            self.bank.x[self.row] = np.asarray(value, float).reshape(-1)
        else:
            self._x = np.asarray(value, float).reshape(-1, 1).copy()

    @property
    def P(self) -> np.ndarray:
        return self.bank.P[self.row] if self.bank is not None else self._P

    @P.setter
    def P(self, value: np.ndarray) -> None:
        if self.bank is not None:
            self.bank.P[self.row] = value
        else:
            self._P = np.array(value, float)

    def detach(self) -> None:
        """Keep a copy of the current state and leave the bank."""
        if self.bank is not None:
            self._x = self.bank.x[self.row][:, None].copy()
            self._P = self.bank.P[self.row].copy()
            self.bank, self.row = None, -1


class KalmanBank:
    """n filters of dimension dim with one model per step (the same F, Q for every row)."""

    def __init__(self, dim: int, capacity: int = 64):
        self.dim = dim
        self.n = 0
        self._x = np.zeros((capacity, dim))
        self._P = np.zeros((capacity, dim, dim))
        self.rows: list[BankRow] = []  # the view of each row, in row order

    def __len__(self) -> int:
        return self.n

    @property
    def x(self) -> np.ndarray:
        """States (n, dim), a view."""
        return self._x[:self.n]

    @property
    def P(self) -> np.ndarray:
        """Covariances (n, dim, dim), a view."""
        return self._P[:self.n]

    def add(self, x0: np.ndarray, P0: np.ndarray) -> list[BankRow]:
        """Append filters with states x0 (k, dim) and covariances P0 (k, dim, dim); their views."""
        k = len(x0)
        if self.n + k > len(self._x):
            cap = max(2 * len(self._x), self.n + k)
            x, P = np.zeros((cap, self.dim)), np.zeros((cap, self.dim, self.dim))
            x[:self.n], P[:self.n] = self.x, self.P
            self._x, self._P = x, P
        self._x[self.n:self.n + k] = x0
        self._P[self.n:self.n + k] = P0
        new = [BankRow(self, self.n + i) for i in range(k)]
        self.rows.extend(new)
        self.n += k
        return new

    def keep(self, mask: np.ndarray) -> None:
        """Keep the rows where mask (n,) is True, in order; the others' views keep their state."""
        mask = np.asarray(mask, bool)
        if mask.all():
            return
        for v, m in zip(self.rows, mask):
            if not m:
                v.detach()
        idx = np.flatnonzero(mask)
        m = len(idx)
        self._x[:m] = self._x[idx]
        self._P[:m] = self._P[idx]
        self.rows = [self.rows[i] for i in idx]
        for i, v in enumerate(self.rows):
            v.row = i
        self.n = m

    def predict(self, F: np.ndarray, Q: np.ndarray) -> None:
        """Every row: x = F x, P = F P F' + Q."""
        if self.n == 0:
            return
        x, P = self.x, self.P
        x[:] = (F @ x[:, :, None])[:, :, 0]
        P[:] = F @ P @ F.T + Q

    def position_d2(self, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Mahalanobis^2 (k,) of points z (k, 3) with covariances R (k, 3, 3) from the positions
        (the first 3 state entries) of rows (k,): y' (P_pos + R)^-1 y."""
        if len(rows) == 0:
            return np.zeros(0)
        y = z - self.x[rows, :3]
        w = np.linalg.solve(self.P[rows, :3, :3] + R, y[:, :, None])
        return (y[:, None, :] @ w)[:, 0, 0]

    def update_position(self, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> None:
        """Kalman update of rows (k,), distinct, with measured positions z (k, 3) of covariance R
        (k, 3, 3): filterpy's KalmanFilter.update(z, R) with H = [I 0] (Joseph form)."""
        if len(rows) == 0:
            return
        x, P = self.x[rows], self.P[rows]
        PHT = P[:, :, :3]
        S = PHT[:, :3, :] + R
        K = PHT @ np.linalg.inv(S)
        y = z - x[:, :3]
        x = x + (K @ y[:, :, None])[:, :, 0]
        I_KH = np.broadcast_to(np.eye(self.dim), P.shape).copy()
        I_KH[:, :, :3] -= K
        P = I_KH @ P @ np.transpose(I_KH, (0, 2, 1)) + K @ R @ np.transpose(K, (0, 2, 1))
        self.x[rows], self.P[rows] = x, P

    def update_linearised(self, rows: np.ndarray, y: np.ndarray, H: np.ndarray, R: np.ndarray,
                          gate_chi2: float = np.inf) -> np.ndarray:
        """Extended Kalman update of rows (k,), distinct: innovations y (k, m) (measurement minus
        its prediction), Jacobians H (k, m, dim), noise R (k, m, m): x += K y, P = (I - K H) P,
        where the innovation's Mahalanobis^2 y' S^-1 y is at most gate_chi2 (returns that mask (k,))."""
        if len(rows) == 0:
            return np.zeros(0, bool)
        P = self.P[rows]
        HT = np.transpose(H, (0, 2, 1))
        S = H @ P @ HT + R
        d2 = (y[:, None, :] @ np.linalg.solve(S, y[:, :, None]))[:, 0, 0]
        ok = ~(d2 > gate_chi2)
        if not ok.all():
            rows, y, H, HT, S, P = rows[ok], y[ok], H[ok], HT[ok], S[ok], P[ok]
        if len(rows):
            K = P @ HT @ np.linalg.inv(S)
            self.x[rows] = self.x[rows] + (K @ y[:, :, None])[:, :, 0]
            self.P[rows] = (np.eye(self.dim) - K @ H) @ P
        return ok
