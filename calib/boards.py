"""Calibration boards (chessboard, ChArUco): geometry and corner detection in one image."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .errors import CalibrationError

_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 30, 0.01)


@dataclass(frozen=True)
class Board:
    """A planar calibration target.

    chessboard: cols x rows *inner corners* (OpenCV's pattern size, e.g. 9x6).
    charuco: cols x rows *squares*; marker_size and dictionary name the ArUco markers.
    square: side of one square in the unit wanted for T (metres, or 1.0 for square units).
    """

    kind: str
    cols: int
    rows: int
    square: float = 1.0
    marker: float = 0.0
    dictionary: str = "DICT_5X5_100"

    @classmethod
    def parse(cls, spec: str, square: float, kind: str = "chessboard", marker: float = 0.0,
              dictionary: str = "DICT_5X5_100") -> "Board":
        """Board from a 'COLSxROWS' string such as '9x6'."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
        if not m:
            raise CalibrationError(f"--board '{spec}': expected COLSxROWS, e.g. 9x6")
        cols, rows = int(m.group(1)), int(m.group(2))
        if not square > 0:
            raise CalibrationError(f"--square {square}: expected a positive square size")
        if kind not in ("chessboard", "charuco"):
            raise CalibrationError(f"--board-type '{kind}': expected chessboard or charuco")
        if kind == "charuco":
            marker = marker or 0.7 * square
            if not 0 < marker < square:
                raise CalibrationError(f"--marker {marker}: expected 0 < marker < square ({square})")
            if not hasattr(cv2.aruco, dictionary):
                raise CalibrationError(f"--dictionary '{dictionary}': not an OpenCV ArUco dictionary")
        if cols < 2 or rows < 2:
            raise CalibrationError(f"--board '{spec}': need at least 2x2")
        return cls(kind, cols, rows, float(square), float(marker), dictionary)

    @property
    def n_corners(self) -> int:
        if self.kind == "chessboard":
            return self.cols * self.rows
        return (self.cols - 1) * (self.rows - 1)

    def object_points(self) -> np.ndarray:
        """(n_corners, 3) corner coordinates on the board plane z=0, in units of `square`."""
        if self.kind == "chessboard":
            grid = np.mgrid[0:self.cols, 0:self.rows].T.reshape(-1, 2)
            return np.column_stack([grid * self.square, np.zeros(len(grid))]).astype(np.float32)
        return np.asarray(self.charuco().getChessboardCorners(), dtype=np.float32).reshape(-1, 3)

    def charuco(self) -> "cv2.aruco.CharucoBoard":
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square, self.marker, d)

    def min_corners(self) -> int:
        return self.n_corners if self.kind == "chessboard" else 6


@dataclass
class BoardDetection:
    """Corners found in one image: ids index board.object_points(); uv are pixels."""

    ids: np.ndarray
    uv: np.ndarray


class BoardDetector:
    """Finds a Board's corners in greyscale images (sub-pixel refined)."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._charuco = None
        if board.kind == "charuco":
            self._charuco = cv2.aruco.CharucoDetector(board.charuco())

    def detect(self, gray: np.ndarray) -> tuple[Optional[BoardDetection], str]:
        """(detection, '') or (None, reason)."""
        if self.board.kind == "chessboard":
            flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            found, corners = cv2.findChessboardCorners(gray, (self.board.cols, self.board.rows), flags=flags)
            if not found:
                return None, "chessboard not found"
            corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), _SUBPIX_CRITERIA)
            return BoardDetection(np.arange(len(corners)), corners.reshape(-1, 2).astype(np.float64)), ""
        ch_corners, ch_ids, _, _ = self._charuco.detectBoard(gray)
        if ch_ids is None or len(ch_ids) < self.board.min_corners():
            n = 0 if ch_ids is None else len(ch_ids)
            return None, f"only {n} ChArUco corners found (need {self.board.min_corners()})"
        return BoardDetection(ch_ids.ravel().astype(int), ch_corners.reshape(-1, 2).astype(np.float64)), ""
