import os
from pathlib import Path

import pytest

# Tests never need a display or a GPU.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DATA = Path(__file__).parent / "data"


def stop_with(proc, sig, timeout: float = 60.0) -> tuple[str, str, float]:
    """Send sig to a running CLI subprocess and wait for it: (stdout, stderr, seconds it took to
    exit). The process is killed if it outlives the timeout (the caller's assertions then fail)."""
    import time

    t = time.monotonic()
    try:
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=timeout)
        return stdout, stderr, time.monotonic() - t
    finally:
        proc.kill()


@pytest.fixture(scope="session")
def opencv_pairs():
    d = DATA / "opencv_stereo"
    left = sorted(str(p) for p in d.glob("left*.jpg"))
    right = sorted(str(p) for p in d.glob("right*.jpg"))
    assert len(left) == len(right) == 13
    return left, right


@pytest.fixture(scope="session")
def opencv_calibration(opencv_pairs):
    from calib import Board, calibrate_stereo
    return calibrate_stereo(*opencv_pairs, Board.parse("9x6", 1.0))
