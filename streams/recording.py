"""Recordings: a folder with cam0/cam1 videos, frames.csv, calib.yaml, meta.json (and gt.csv for sims).

frames.csv (header `index,t0,t1`) is flushed after each pair's images are written and flushed,
so a recording killed mid-write stays readable up to its last complete pair. The default video
format is a Motion-JPEG stream (`cam0.mjpg`: JPEG frames encoded by OpenCV, one after another,
which OpenCV, ffmpeg and VLC play); the AVI/MKV codecs go through cv2.VideoWriter, whose muxer
buffers, so a killed AVI recording may end a few pairs before its frames.csv (the reader then
stops cleanly at the last complete pair and counts the rest). An empty t0/t1 means
that camera gave no frame for the pair; the video then holds a black placeholder frame so that
both videos stay frame-aligned with frames.csv.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from calib import StereoCalibration, load_calibration, save_calibration

from .base import Closeable, Pacer
from .errors import OutputError, StreamError
from .frames import FramePair, VideoImage
from .jpegstream import JpegStreamIndex
from .pairing import StereoSource

log = logging.getLogger(__name__)

FRAMES_HEADER = ["index", "t0", "t1"]
CODECS = {"MJPEG": ".mjpg", "MJPG": ".avi", "FFV1": ".mkv", "HFYU": ".avi"}
VIDEO_EXTS = (".mjpg", ".avi", ".mkv", ".mp4", ".mov")
MIN_FREE_BYTES = 32 * 2**20  # a recording stops with this much left: the AVI/MKV muxers buffer frames


class JpegStreamSink:
    """A Motion-JPEG elementary stream: each frame JPEG-encoded by OpenCV and flushed at once."""

    def __init__(self, path: Path, quality: int = 95):
        self.path = path
        self._f = open(path, "wb")
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]

    def write(self, img: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", img, self._params)
        if not ok:
            raise StreamError(f"{self.path}: JPEG encoding failed")
        self._f.write(buf.tobytes())

    def flush(self) -> None:
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            self._f.close()


class CvVideoSink:
    """cv2.VideoWriter (its muxer buffers: flush() cannot force frames out)."""

    def __init__(self, path: Path, codec: str, fps: float, size: tuple[int, int]):
        self.path = path
        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size, True)
        if not self._w.isOpened():
            raise StreamError(f"{path}: OpenCV cannot write {codec} video here")
        if codec == "MJPG":
            self._w.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)

    def write(self, img: np.ndarray) -> None:
        self._w.write(img)

    def flush(self) -> None:
        pass

    def release(self) -> None:
        self._w.release()


class RecordingWriter(Closeable):
    """Writes FramePairs to a recording folder. Use as a context manager or call close().

    A write that fails (disk full, I/O error), or a disk with less than `min_free_bytes` left
    (checked before each pair, so the muxers of the AVI/MKV codecs never lose frames silently),
    stops the recording: write() raises OutputError saying how many pairs are readable, frames.csv
    is cut to exactly those pairs, and `error` keeps the cause. `readable` is the number of pairs
    a reader gets back (after close(); for AVI/MKV after a failure, counted by reading back).
    """

    def __init__(self, out_dir: str | os.PathLike, calib: Optional[StereoCalibration] = None, fps: float = 30.0,
                 codec: str = "MJPEG", meta: Optional[dict] = None, overwrite: bool = False,
                 fsync_every_s: float = 1.0, min_free_bytes: int = MIN_FREE_BYTES):
        self.dir = Path(out_dir)
        if codec not in CODECS:
            raise StreamError(f"codec {codec!r}: expected one of {', '.join(CODECS)}")
        if self.dir.exists() and any(self.dir.iterdir()) and not overwrite:
            raise StreamError(f"{self.dir}: folder exists and is not empty (choose another --out)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.codec = codec
        self.count = 0
        self.readable = 0
        self.error: Optional[BaseException] = None
        self.min_free_bytes = int(min_free_bytes)
        self._writers: list = [None, None]
        self._size: list[Optional[tuple[int, int]]] = [None, None]  # per camera (they may differ)
        self._channels = 3
        self._calib_size = (calib.cam0.image_size, calib.cam1.image_size) if calib is not None else (None, None)
        if calib is not None:
            save_calibration(calib, self.dir / "calib.yaml")
        self.meta = {"format": "tracker3d-recording@1", "fps": self.fps, "codec": codec,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
        (self.dir / "meta.json").write_text(json.dumps(self.meta, indent=2))
        self._frames_path = self.dir / "frames.csv"
        self._frames = open(self._frames_path, "w", newline="", encoding="utf-8")
        self._frames.write(",".join(FRAMES_HEADER) + "\n")
        self._frames.flush()
        self._good_bytes = self._frames.tell()  # frames.csv up to its last complete row
        self._fsync_every = fsync_every_s
        self._last_sync = time.monotonic()

    def _open_writers(self, pair: FramePair) -> None:
        first = pair.img0 if pair.img0 is not None else pair.img1
        for i, img in enumerate((pair.img0, pair.img1)):
            if self._size[i] is None:  # a camera's size: its first frame's (else its calibration's)
                src = img if img is not None or self._calib_size[i] is None else None
                src = first if src is None and self._calib_size[i] is None else src
                self._size[i] = (src.shape[1], src.shape[0]) if src is not None else self._calib_size[i]
        for i in (0, 1):
            path = self.dir / f"cam{i}{CODECS[self.codec]}"
            self._writers[i] = (JpegStreamSink(path) if self.codec == "MJPEG"
                                else CvVideoSink(path, self.codec, self.fps, self._size[i]))

    def _prepare(self, img: Optional[np.ndarray], cam: int) -> np.ndarray:
        w, h = self._size[cam]
        if img is None:
            return np.zeros((h, w, 3), np.uint8)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if (img.shape[1], img.shape[0]) != (w, h):
            raise StreamError(f"{self.dir}: cam{cam} frame {img.shape[1]}x{img.shape[0]} differs from the "
                              f"recording's {w}x{h}")
        return img

    def free_bytes(self) -> int:
        """Bytes the recording's file system has left for this user."""
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def write(self, pair: FramePair) -> None:
        if self.error is not None:
            raise OutputError(f"{self.dir}: recording stopped after {self.readable} pairs ({self.error})")
        first = pair.img0 if pair.img0 is not None else pair.img1
        if first is None:
            return
        try:
            free = self.free_bytes()
            if free < self.min_free_bytes:
                raise OSError(errno.ENOSPC, f"disk nearly full: {free / 2**20:.1f} MiB left, a recording stops "
                              f"below {self.min_free_bytes / 2**20:.0f} MiB so that what it wrote stays readable")
            if self._writers[0] is None:
                self._open_writers(pair)
            self._writers[0].write(self._prepare(pair.img0, 0))
            self._writers[1].write(self._prepare(pair.img1, 1))
            self._writers[0].flush()
            self._writers[1].flush()
            t0 = "" if pair.img0 is None or math.isnan(pair.t0) else f"{pair.t0:.6f}"
            t1 = "" if pair.img1 is None or math.isnan(pair.t1) else f"{pair.t1:.6f}"
            self._frames.write(f"{pair.index},{t0},{t1}\n")
            self._frames.flush()
            now = time.monotonic()
            if now - self._last_sync >= self._fsync_every:
                os.fsync(self._frames.fileno())
                self._last_sync = now
        except OSError as exc:
            self._fail(exc)
        self._good_bytes = self._frames.tell()
        self.count += 1
        self.readable = self.count

    def _fail(self, exc: OSError) -> None:
        """Stop recording after a failed write: close everything, keep frames.csv to the pairs
        that are readable, and raise OutputError saying how many."""
        self.error = exc
        self._release()
        self.readable = self._count_readable()
        _cut_rows(self._frames_path, self._good_bytes, self.readable)
        what = exc.strerror or str(exc)
        raise OutputError(f"{self.dir}: recording stopped: {what}; {self.readable} of {self.count} pairs "
                          "readable") from None

    def _release(self) -> None:
        for w in self._writers:
            if w is not None:
                try:
                    w.release()
                except OSError as exc:
                    log.warning("%s: %s", w.path, exc)
        if not self._frames.closed:
            try:
                self._frames.close()
            except OSError:
                pass  # the unwritten tail is cut below

    def _count_readable(self) -> int:
        """Pairs a reader gets back: the rows written for the kill-safe stream; for AVI/MKV,
        whose muxer buffers and never reports a failed write, the frames that decode."""
        if self.codec == "MJPEG" or self._writers[0] is None:
            return self.count
        frames = []
        for w in self._writers:
            cap = cv2.VideoCapture(str(w.path))
            n = 0
            while n < self.count and cap.isOpened() and cap.grab():
                n += 1
            cap.release()
            frames.append(n)
        return min(self.count, *frames)

    def close(self) -> None:
        if self.error is not None:
            return
        try:
            if not self._frames.closed:
                self._frames.flush()
                os.fsync(self._frames.fileno())
            self._release()
            low = self.free_bytes() < self.min_free_bytes
        except OSError as exc:
            self.error = exc
            low = True
        if low and self.codec != "MJPEG":  # the muxer may have lost its last frames
            self._release()
            self.readable = self._count_readable()
            if self.readable < self.count:
                _cut_rows(self._frames_path, self._good_bytes, self.readable)
                self.error = self.error or OSError(errno.ENOSPC, "disk full while closing the videos")
                log.warning("%s: only %d of %d pairs readable (disk full)", self.dir, self.readable, self.count)


def _cut_rows(path: Path, good_bytes: int, rows: int) -> None:
    """Cut frames.csv to its header and first `rows` rows (never past `good_bytes`, the end of
    the last row known to be complete). Cutting a file needs no free space."""
    with open(path, "rb") as f:
        data = f.read(good_bytes)
    end = 0
    for _ in range(rows + 1):  # the header and `rows` rows
        nl = data.find(b"\n", end)
        if nl < 0:
            break
        end = nl + 1
    os.truncate(path, end)


def _parse_time(s: str, path: Path, line: int, col: str) -> float:
    if s == "":
        return math.nan
    try:
        v = float(s)
    except ValueError:
        raise StreamError(f"{path}:{line}: field '{col}': expected seconds, got {s!r}") from None
    if not math.isfinite(v):
        raise StreamError(f"{path}:{line}: field '{col}': expected a finite time, got {s!r}")
    return v


def read_frames_csv(path: Path) -> list[tuple[int, float, float]]:
    """Rows (index, t0, t1) of a frames.csv; a partial last line (a cut-off write) is ignored.
    Times are checked (check_times): they must rise; a jump forward is logged."""
    if not path.is_file():
        raise StreamError(f"{path}: missing (not a tracker3d recording?)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamError(f"{path}: not UTF-8 text") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    if tail.strip():
        log.warning("%s: ignoring a partial last line (recording was cut off)", path)
    if not complete or complete[0].strip().replace(" ", "") != ",".join(FRAMES_HEADER):
        raise StreamError(f"{path}: expected the header 'index,t0,t1'")
    rows: list[tuple[int, float, float, int]] = []
    last = -1
    for n, line in enumerate(complete[1:], start=2):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 3:
            raise StreamError(f"{path}:{n}: expected 3 fields index,t0,t1, got {len(parts)}")
        try:
            idx = int(parts[0])
        except ValueError:
            raise StreamError(f"{path}:{n}: field 'index': expected an integer, got {parts[0]!r}") from None
        if idx <= last:
            raise StreamError(f"{path}:{n}: field 'index': {idx} does not increase (previous {last})")
        last = idx
        t0 = _parse_time(parts[1], path, n, "t0")
        t1 = _parse_time(parts[2], path, n, "t1")
        if math.isnan(t0) and math.isnan(t1):
            raise StreamError(f"{path}:{n}: both t0 and t1 are empty")
        rows.append((idx, t0, t1, n))
    check_times(path, rows)
    return [r[:3] for r in rows]


JUMP_MIN_S = 1.0  # a gap this long (and 50 frame periods) between two pairs is a time jump


def check_times(path: Path, rows: list[tuple[int, float, float, int]]) -> None:
    """Each camera's times must rise: StreamError naming the line otherwise (all-zero times,
    repeated or falling times). A jump forward (a gap of over 1 s and 50 frame periods) is
    logged as a warning naming its line: tracks end there and start again."""
    times = [(t0, t1) for _, t0, t1, _ in rows]
    present = [v for pair in times for v in pair if not math.isnan(v)]
    if len(rows) > 1 and present and all(v == 0.0 for v in present):
        raise StreamError(f"{path}: every t0 and t1 is 0 (lines 2-{rows[-1][3]}): the recording has no "
                          "capture times (expected seconds that rise pair by pair)")
    for k, col in enumerate(("t0", "t1")):
        prev: Optional[tuple[float, int]] = None
        for _, *ts, line in rows:
            v = ts[k]
            if math.isnan(v):
                continue
            if prev is not None and v <= prev[0]:
                what = "repeats" if v == prev[0] else "goes back from"
                raise StreamError(f"{path}:{line}: field '{col}': time {v:.6f} {what} {prev[0]:.6f} (line "
                                  f"{prev[1]}); expected times that rise pair by pair")
            prev = (v, line)
    t = np.array([t0 if not math.isnan(t0) else t1 for t0, t1 in times])
    if len(t) < 3:
        return
    dt = np.diff(t)
    period = float(np.median(dt))
    for i in np.flatnonzero(dt > max(JUMP_MIN_S, 50 * period))[:3]:
        log.warning("%s:%d: time jumps by %.1f s (frame period %.3f s): tracks end there and start again",
                    path, rows[i + 1][3], dt[i], period)


def _meta_fps(path: Path, meta: dict) -> float:
    """meta.json's `fps` (30 when absent): StreamError unless a finite number > 0."""
    v = meta.get("fps", 30.0)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok:
        raise StreamError(f"{path}: field 'fps': expected a number of frames per second > 0, got {json.dumps(v)}")
    return float(v)


def _find_video(d: Path, cam: str) -> Path:
    found = sorted(p for p in d.glob(f"{cam}.*") if p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise StreamError(f"{d}: no {cam} video ({'/'.join(VIDEO_EXTS)})")
    return found[0]


RECORDING_FILES = ("frames.csv", "calib.yaml", "meta.json", "gt.csv")


def recording_files(d: str | os.PathLike) -> list[Path]:
    """The files that make up the recording folder `d` (those that exist): the inputs that no
    output of a run over it may replace."""
    d = Path(d)
    if not d.is_dir():
        return []
    parts = [d / n for n in RECORDING_FILES]
    parts += [p for cam in ("cam0", "cam1") for p in d.glob(f"{cam}.*") if p.suffix.lower() in VIDEO_EXTS]
    return [p for p in parts if p.exists()]


class RecordingReader(StereoSource):
    """Reads a recording folder as a lossless StereoSource, at full speed or at recorded speed.

    A recording whose videos hold fewer frames than frames.csv lists ends cleanly at the last
    complete pair; `truncated` counts the rows that could not be read.
    """

    def __init__(self, path: str | os.PathLike, realtime: bool = False, start: int = 0,
                 stop: Optional[int] = None, require_calib: bool = False,
                 calib: Optional[StereoCalibration] = None):
        """calib: use this calibration instead of the folder's calib.yaml (its image sizes are
        checked against the videos' all the same)."""
        super().__init__()
        self.dir = Path(path)
        if not self.dir.is_dir():
            raise StreamError(f"{self.dir}: is a file, not a recording folder (frames.csv, cam0.*, cam1.*, calib.yaml)"
                              if self.dir.exists() else f"{self.dir}: recording folder not found")
        listed = read_frames_csv(self.dir / "frames.csv")
        if not listed:  # a recording stopped before its first pair, or a header written alone
            raise StreamError(f"{self.dir / 'frames.csv'}: no pairs listed (only the header): nothing to replay")
        self.rows = listed[start:stop]
        self.meta: dict = {}
        mp = self.dir / "meta.json"
        if mp.is_file():
            try:
                self.meta = json.loads(mp.read_text(encoding="utf-8"))
                if not isinstance(self.meta, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as exc:
                raise StreamError(f"{mp}: not a JSON object ({exc})") from None
        self.calib: Optional[StereoCalibration] = calib
        cp = self.dir / "calib.yaml"
        if calib is not None:
            pass
        elif cp.is_file():
            self.calib = load_calibration(cp)
        elif require_calib:
            raise StreamError(f"{cp}: missing (a recording needs its calibration; pass --calib FILE)")
        self.video_paths = (_find_video(self.dir, "cam0"), _find_video(self.dir, "cam1"))
        self.caps = [cv2.VideoCapture(str(p)) for p in self.video_paths]
        for p, c in zip(self.video_paths, self.caps):
            if not c.isOpened():
                raise StreamError(f"{p}: cannot open the video")
        self._start = start
        # Our own Motion-JPEG streams are walked one image ahead of the decoder (streams.jpegstream):
        # it would skip a damaged image silently and pair the cameras' frames wrongly after it.
        self._jpeg = [JpegStreamIndex(p) if p.suffix.lower() == ".mjpg" else None for p in self.video_paths]
        self._sizes: list[Optional[tuple[int, int]]] = [None, None]  # each video's first image size (no calibration)
        if self.calib is not None:
            self._check_sizes(calib is not None)
        if start:
            for k, c in enumerate(self.caps):
                # Decoded and dropped, not a seek: on a Motion-JPEG stream CAP_PROP_POS_FRAMES lands on
                # image 0 (and every later pair would be made of the wrong images).
                for i in range(start):
                    if self._next_image(k, i) != "whole" or not c.grab():
                        self.close()
                        raise StreamError(f"{self.video_paths[k]}: holds fewer than {start} whole images before "
                                          f"the pair to start from")
        self._pacer = Pacer() if realtime else None
        self.truncated = 0
        self._i = 0
        self.decoded_here = True  # False: pairs hold VideoImages (decode_in_detectors)
        if self.calib is not None:
            self.image_size = self.calib.cam0.image_size
        self.fps = _meta_fps(mp, self.meta)

    def _check_sizes(self, given: bool) -> None:
        """The videos' frame size against the calibration's image sizes, before any pair is read:
        a calibration for another size would turn every pixel into a wrong ray."""
        for k, (p, c) in enumerate(zip(self.video_paths, self.caps)):
            have = (int(c.get(cv2.CAP_PROP_FRAME_WIDTH)), int(c.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            want = tuple((self.calib.cam0, self.calib.cam1)[k].image_size)
            if have[0] > 0 and have != want:
                self.close()
                what = "the given calibration (--calib)" if given else f"{self.dir / 'calib.yaml'}"
                raise StreamError(f"{p}: frames are {have[0]}x{have[1]} but the calibration expects "
                                  f"{want[0]}x{want[1]} for cam{k} ({what}: use the calibration made for these "
                                  "cameras at this resolution)")

    def __len__(self) -> int:
        return len(self.rows)

    def decode_in_detectors(self) -> bool:
        """From the next pair on, hand out VideoImages instead of decoded images, for detector
        processes that decode their camera's video themselves (streams.videoimages): the two decodes
        run side by side, next to their detection, and no image crosses between processes (on two
        cores a fast replay went from 85-93 to 98-107 pairs/s). Only for Motion-JPEG videos, whose
        images this reader walks itself (whole, damaged, cut: see _next_image), so it still knows
        where the recording ends without decoding. Call before the first read(). True if done."""
        if self._i or not all(self._jpeg):
            return False
        self.decoded_here = False
        cams = (self.calib.cam0, self.calib.cam1) if self.calib is not None else (None, None)
        self._expected = [tuple(c.image_size) if c is not None else None for c in cams]
        return True

    def read(self, timeout: Optional[float] = None) -> Optional[FramePair]:
        if self._i >= len(self.rows):
            return None
        idx, t0, t1 = self.rows[self._i]
        number = self._start + self._i
        whole = all(self._next_image(k, number) == "whole" for k in (0, 1))
        if not self.decoded_here and whole:
            self._i += 1
            img0, img1 = (VideoImage(str(p), number, size) for p, size in zip(self.video_paths, self._expected))
            pair = FramePair(idx, t0, t1, img0 if not math.isnan(t0) else None, img1 if not math.isnan(t1) else None)
            return self._hand_out(pair, self._pacer)
        ok0, img0 = self.caps[0].read() if whole else (False, None)
        ok1, img1 = self.caps[1].read() if whole else (False, None)
        if not (ok0 and ok1):
            self.truncated = len(self.rows) - self._i
            log.warning("%s: videos end after %d of %d pairs listed in frames.csv; stopping cleanly",
                        self.dir, self._i, len(self.rows))
            self._i = len(self.rows)
            return None
        if self.calib is not None:
            for k, img in enumerate((img0, img1)):
                want = (self.calib.cam0, self.calib.cam1)[k].image_size
                if (img.shape[1], img.shape[0]) != tuple(want):
                    raise StreamError(f"{self.video_paths[k]}: frames are {img.shape[1]}x{img.shape[0]} but "
                                      f"the calibration expects {want[0]}x{want[1]} for cam{k}")
        self._i += 1
        pair = FramePair(idx, t0, t1, img0 if not math.isnan(t0) else None, img1 if not math.isnan(t1) else None)
        return self._hand_out(pair, self._pacer)

    def _next_image(self, k: int, number: int) -> str:
        """Camera k's next image in its Motion-JPEG stream (number: its place in the video):
        "whole", or "end" (the file ends, or ends inside it: a cut-off recording); StreamError for
        damage with whole images after it. "whole" for videos of other formats."""
        ix = self._jpeg[k]
        if ix is None:
            return "whole"
        img = ix.next()
        if img is None or img.kind == "cut":
            return "end"
        if img.kind == "whole":
            self._check_image_size(k, number, img)
            return "whole"
        while (later := ix.next()) is not None and later.kind != "whole":
            pass
        if later is None:  # garbage to the end of the file: where a cut-off recording ends
            return "end"
        path = self.video_paths[k]
        raise StreamError(f"{path}: image {number} (byte {img.start}) is damaged, with whole images after it: the "
                          f"decoder would skip it and pair the two cameras' frames wrongly from there on; keep the "
                          f"first {number} rows of frames.csv to replay the pairs before it")

    def _check_image_size(self, k: int, number: int, img) -> None:
        """A JPEG of another size than the calibration's (or, without one, than the video's first
        image) is refused: FFmpeg's reader would scale it to the stream's first size without a word
        (a video of another size appended to a recording tracked on, MOTA 0.86 -> 0.19)."""
        if img.size is None:
            return
        if self.calib is not None:
            want, what = tuple((self.calib.cam0, self.calib.cam1)[k].image_size), f"the calibration expects for cam{k}"
        else:
            if self._sizes[k] is None:
                self._sizes[k] = img.size
            want, what = self._sizes[k], "the video's first image is"
        if img.size != want:
            raise StreamError(f"{self.video_paths[k]}: image {number} (byte {img.start}) is {img.size[0]}x{img.size[1]} "
                              f"but {what} {want[0]}x{want[1]}; keep the first {number} rows of frames.csv to replay "
                              f"the pairs before it")

    def close(self) -> None:
        for ix in getattr(self, "_jpeg", ()):
            if ix is not None:
                ix.close()
        for c in self.caps:
            c.release()
