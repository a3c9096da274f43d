"""The stereo loop: one FramePair in, 3D tracks out (StereoPipeline), and the runner around it
(threads for the two cameras' detection, backpressure, timing, counters, publishing, shutdown).

Stages know nothing of threads or sockets; this module is the only place that does.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from calib import StereoCalibration
from calib.triangulate import triangulate
from persistence import Gate, HitCountGate, RateGuardedGate
from streams.detections import Boxes2D, DetectionPair
from streams.frames import FramePair
from streams.messages import rounded, significant

from .cores import TrackCore, free_children
from .detect import make_detector
from .detect.detections import Detections
from .detect.process import SLOTS, DetectorProcess, pin_cpu
from .detect.sizeprior import area_range_px
from .errors import RunFailure, Tracker3DError
from .handoff import EMPTY, END, HandOff, ProducerThread
from .stereo.associate import AssociationConfig, StereoAssociator
from .stereo.boxcut import AspectModel, axis_sigma, complete_boxes, cut_sides
from .stereo.claim import ClaimConfig, claim_view, project_predictions
from .stereo.track3d import PairObservation, Track3D, Track3DConfig, Tracker3D
from .track2d.tracker import ByteTracker, TrackerConfig

log = logging.getLogger(__name__)

ANCHORS = ("center", "bottom")  # which point of a box is the object (triangulated and reported)
STAGES = ("detect", "track2d", "gate", "associate", "triangulate_kf", "publish")
CAM1_KEY_OFFSET = 1 << 40  # cam1 track ids in the shared gate batch
# An outside detector's box centre is not a point on the object: it moves a few per cent of the box
# size between views and frames (WildTrack person boxes: 0.05 makes their triangulations consistent).
BOX_NOISE_REL = 0.05
BOX_POS_REL = 4.0  # with box noise, a 3D track may be as uncertain as this many of its triangulations
OUTSIDE_SIZE_WEIGHT = 0.5  # an outside detector's boxes: weight of size consistency in the association cost
# Objects on the ground (--ground): the vertical's acceleration noise (m/s^2: a walker's box centre
# bobs a few centimetres), the height layer's weight in the association cost, and how uncertain a
# track kept by one view may be and still be reported (metres).
GROUND_VERTICAL_ACCEL = 0.02
GROUND_HEIGHT_WEIGHT = 0.5
GROUND_REPORT_POS_STD = 0.5


@dataclass
class PipelineConfig:
    detector: str = "bg"
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    claim: ClaimConfig = field(default_factory=ClaimConfig)  # live 3D tracks claim detections first
    track3d: Track3DConfig = field(default_factory=Track3DConfig)
    pixel_sigma: float = 0.25  # centroid noise used for triangulation covariance (our detector: 0.1-0.3 px) ...
    # ... or this fraction of the box size (sqrt(w h)), if larger. None: chosen by where the boxes come
    # from: BOX_NOISE_REL for an outside detector's boxes (DetectionPair), 0 for our blob detectors.
    pixel_rel: Optional[float] = None
    border_px: float = 1.0  # a box this close to the image border is cut off: its centre is biased, so ...
    complete_cut: bool = True  # ... an outside detector's box is completed (the view's aspect ratio; boxcut.py)
    truncated_rel: Optional[float] = None  # ... it is triangulated with this fraction of its size as pixel
    # noise (0: not at all; None: as pixel_rel)
    sync_correction: bool = True  # move camera 1's pixels to camera 0's capture time (shutter skew)
    threads: bool = True  # detect the two cameras side by side ...
    # ... each in a child process of its own (tracker3d.detect.process) instead of a thread: on a
    # few cores the loop is bound by the interpreter lock that detection and tracking share
    processes: bool = False
    # run(): read and detect pair k+1 on a thread of its own while pair k is tracked and published
    pipelined: bool = True
    # run(), pipelined, detector processes, a file or recording (not a live source): the tracking
    # thread gets a core of its own while it is the bottleneck (tracker3d.cores.TrackCore). Live
    # sources keep each child on its own core: a live pair's detection waits for both children.
    track_core: bool = True
    # Detect on images downscaled by this factor (0 < s <= 1; cv2.resize INTER_AREA), positions mapped
    # back to full-resolution pixels: for 1280x720 and above, where detection dominates the loop.
    detect_scale: float = 1.0
    # The point of each 2D box that is triangulated: its centre, or the middle of its bottom edge
    # (a person's feet on the ground). 2D tracking and association always use the box centre.
    anchor: str = "center"
    # Detector options (e.g. min_area, max_area, merge_px for bg), and a size prior in metres:
    # objects of width x height between object_size_m[0:2] and object_size_m[2:4] at depths
    # depth_m[0]..depth_m[1] set each camera's min_area/max_area from its focal lengths.
    detector_options: dict = field(default_factory=dict)
    object_size_m: Optional[tuple[float, float, float, float]] = None
    depth_m: Optional[tuple[float, float]] = None
    # Objects move on the ground of the calibration's world frame (z up): people, vehicles, animals
    # walking. Their height stays put (planar motion), a cross-camera pair must triangulate in the
    # layer of heights the tracks keep to (two objects on one epipolar line do not), and a 3D track
    # that one camera loses is kept and updated by the other (one view fixes a point of known height).
    ground: bool = False


@dataclass
class Detected:
    """One pair after detection (StereoPipeline.detect): each camera's Detections (pixels; None =
    no frame from that camera) with their capture times t0/t1 (seconds; NaN with None)."""

    pair: FramePair | DetectionPair
    t0: float
    t1: float
    det0: Optional[Detections]
    det1: Optional[Detections]
    detect_ms: float
    outside: bool  # boxes from an outside detector (DetectionPair)


@dataclass
class Frame3D:
    """What one pair produced. tracks: message-format dicts (see streams.messages)."""

    index: int
    t: float
    tracks: list[dict]
    timings: dict[str, float]  # ms per stage
    raw: dict[int, np.ndarray] = field(default_factory=dict)  # 3D id -> raw triangulated xyz this frame
    wall: float = float("nan")
    # ms from the pair's capture (its wall-clock capture time: cameras, detection streams, the sim)
    # to its publication, or None where the source has no capture wall time (recordings, files):
    # the value every message of this pair carries (ZMQ and --out files alike). Set by run().
    latency_ms: Optional[float] = None
    # ms from capture, or from arrival where there is no capture time, to publication: what
    # run()'s latency statistics take, for every pair (set by run()).
    age_ms: Optional[float] = None


def hit_count_rule(gate) -> Optional[HitCountGate]:
    """The hit-count rule `gate` decides by now (a HitCountGate, or a RateGuardedGate's fallback
    once it fell back to it, or while it is still measuring the rate and its fallback answers),
    or None when a learned score decides."""
    if isinstance(gate, RateGuardedGate):
        return hit_count_rule(gate.fallback) if gate.use_learned is not True else None
    return gate if isinstance(gate, HitCountGate) else None


def gate_counts_hits(gate) -> bool:
    """Whether `gate` decides by the hit-count rule now, not by a learned score."""
    return hit_count_rule(gate) is not None


class StereoPipeline:
    """detect -> track2d (both cameras) -> one gate call -> associate -> triangulate + 3D KF."""

    def _detector_options(self, cam) -> dict:
        """The configured detector options, with min/max area from the size prior in metres."""
        kw = dict(self.cfg.detector_options)
        if self.cfg.object_size_m is not None and self.cfg.depth_m is not None:
            kw["min_area"], kw["max_area"] = area_range_px(cam.K[0, 0], cam.K[1, 1], self.cfg.object_size_m,
                                                           self.cfg.depth_m)
        return kw

    def __init__(self, calib: StereoCalibration, config: Optional[PipelineConfig] = None,
                 gate: Optional[Gate] = None, keep_log: bool = False):
        self.calib = calib
        self.cfg = config or PipelineConfig()
        if self.cfg.anchor not in ANCHORS:
            raise ValueError(f"anchor {self.cfg.anchor!r}: expected one of {', '.join(ANCHORS)}")
        self.gate = gate if gate is not None else HitCountGate(3, 1.0)
        if self.cfg.ground:
            self.cfg = self._ground_config(self.cfg, calib)
        options = [self._detector_options(cam) for cam in (calib.cam0, calib.cam1)]
        # Built here even when they run in child processes: bad options fail now, in one line.
        self.detectors = [make_detector(self.cfg.detector, detect_scale=self.cfg.detect_scale, **kw) for kw in options]
        # With processes, each child builds the same detector and detects the pairs with images.
        self.children: list[DetectorProcess] = []
        if self.cfg.processes:
            self.children = [DetectorProcess(self.cfg.detector, self.cfg.detect_scale, kw, name=f"cam{c} detector",
                                              cpu=pin_cpu(c))
                              for c, kw in enumerate(options)]
        self.trackers = [ByteTracker(self.cfg.tracker, self.gate, calib.cam0.image_size),
                         ByteTracker(self.cfg.tracker, self.gate, calib.cam1.image_size, gate_key_offset=CAM1_KEY_OFFSET)]
        self.associator = StereoAssociator(calib, self.cfg.association)
        self.aspects = (AspectModel(), AspectModel())  # each view's box aspect ratio (boxes cut by the border)
        self.tracker3d = Tracker3D(calib, self.cfg.track3d, keep_log=keep_log)
        self._pool = None
        if self.cfg.threads or self.cfg.processes:
            # The two cameras' detectors run side by side (threads or processes); OpenCV's own
            # worker threads on top of them would only oversubscribe the cores.
            import sys

            import cv2

            cv2.setNumThreads(1)
            if "torch" in sys.modules:  # a learned gate: its small per-frame ops gain nothing from a
                # thread pool whose idle workers spin on the cores the detectors need
                sys.modules["torch"].set_num_threads(1)
            # Nor numpy's BLAS: OpenBLAS splits the association's pruning products ((150 x 39) @
            # (39 x 150) at 200 objects) over its threads, 0.04 ms on one, 0.3-2.5 ms on two when
            # the other core is busy (process-wide, like the two above).
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # an environment installed before it was a dependency: only slower
                log.warning("threadpoolctl is not installed (pip install threadpoolctl): numpy's BLAS "
                            "keeps its threads, which slows the loop on a busy machine")
            else:
                threadpool_limits(1, user_api="blas")
        if self.cfg.threads and not self.cfg.processes:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="detect")
        self._last_t: Optional[float] = None
        self._dt = 1 / 30.0
        self._classes: tuple[dict, dict] = ({}, {})  # per camera: 2D track id -> class of its last detection
        self._class3d: dict[int, object] = {}  # 3D track id -> its newest known class
        self._gaps = 0  # frame periods seen (the first one sets the dt estimate)
        self.resets = 0  # time jumps that ended every track
        self.warnings: list[str] = []  # said once each (logged, and in the run summary)
        # Per camera over the run: detections seen, and the most confirmed 2D tracks at once
        # (what a run with no 3D track at all is explained from: tracker3d.commands.common).
        self.detections_seen = [0, 0]
        self.confirmed_max = [0, 0]
        self._unpaired: Optional[tuple[float, int]] = None  # (since, frames) with tracks in both views, no pair
        self.outside_boxes = False  # set by the first DetectionPair: boxes from an outside detector
        self._apply_box_noise()

    @staticmethod
    def _ground_config(c: PipelineConfig, calib: StereoCalibration) -> PipelineConfig:
        """The config with ground mode's settings filled in where the config leaves them open."""
        if not calib.has_world:
            raise Tracker3DError("--ground: the calibration has no world frame (fields R_world and t_world, world z up); "
                                 "add them (see README 'Objects on the ground') or leave --ground out")
        t3 = replace(c.track3d,
                     vertical_accel_std=GROUND_VERTICAL_ACCEL if c.track3d.vertical_accel_std is None
                     else c.track3d.vertical_accel_std,
                     report_pos_std=GROUND_REPORT_POS_STD if c.track3d.report_pos_std is None else c.track3d.report_pos_std)
        assoc = replace(c.association, height_weight=c.association.height_weight or GROUND_HEIGHT_WEIGHT)
        return replace(c, track3d=t3, association=assoc, claim=replace(c.claim, enabled=True))

    def _apply_box_noise(self) -> None:
        """Resolve the box-noise fractions (None = by where the boxes come from) for triangulation
        and the 3D tracks' deletion rule."""
        c = self.cfg
        auto = BOX_NOISE_REL if self.outside_boxes else 0.0
        self.pixel_rel = auto if c.pixel_rel is None else c.pixel_rel
        self.truncated_rel = self.pixel_rel if c.truncated_rel is None else c.truncated_rel
        if c.track3d.max_pos_rel is None:
            self.tracker3d.max_pos_rel = BOX_POS_REL if self.pixel_rel > 0 else 0.0
        for trk in self.trackers:
            trk.outside = self.outside_boxes
        if c.association.size_weight is None:
            self.associator.cfg = replace(c.association, size_weight=OUTSIDE_SIZE_WEIGHT if self.outside_boxes else 0.0)

    def warn_once(self, key: str, text: str) -> None:
        """Log `text` as a warning the first time `key` is seen; it also goes in the run summary."""
        if any(w.startswith(key + ":") for w in self.warnings):
            return
        self.warnings.append(f"{key}: {text}")
        log.warning("%s", text)

    @property
    def reset_gap_s(self) -> float:
        """A gap between pairs longer than this is a time jump, not missing frames: longer than
        twice any track buffer and 20 frame periods."""
        c = self.cfg
        return max(2 * c.tracker.lost_buffer_s, 2 * c.track3d.max_coast_s, 20 * self._dt)

    def _reset_tracks(self, index: int, gap: float) -> None:
        """A time jump: every 2D and 3D track ends here (3D ones are finished, kept for smoothing);
        new tracks start from the next detections. The frame-period estimate is kept."""
        old = self.trackers
        self.trackers = [ByteTracker(self.cfg.tracker, self.gate, self.calib.cam0.image_size),
                         ByteTracker(self.cfg.tracker, self.gate, self.calib.cam1.image_size,
                                     gate_key_offset=CAM1_KEY_OFFSET)]
        for before, after in zip(old, self.trackers):
            after.outside = before.outside
            before.gate.forget((before.ids + before.gate_key_offset).tolist())
            after.next_id = before.next_id  # 2D ids stay unique over the run
        self.tracker3d.finish()
        self.resets += 1
        self.warn_once("time jump", f"pair {index}: time jumps by {gap:.1f} s (frame period {self._dt:.3f} s): "
                       "every track ended there and tracking started again (said once)")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for d in self.children:
            d.close()

    def wait_ready(self) -> None:
        """Start the detector processes, side by side, and wait until they are ready (run() does,
        before the first pair is read; else the first pair starts them)."""
        for d in self.children:
            d.start()
        for d in self.children:
            d.wait_ready()

    @staticmethod
    def _jobs(detectors, pair: FramePair) -> list[tuple]:
        """(detector, image, capture time) of each camera (image None: no frame from it)."""
        return [(detectors[0], pair.img0, pair.t0), (detectors[1], pair.img1, pair.t1)]

    @staticmethod
    def _detected(pair: FramePair, det0: Optional[Detections], det1: Optional[Detections], ms: float) -> Detected:
        """A detected image pair: a camera without a frame has no detections and a NaN time."""
        return Detected(pair, pair.t0 if pair.img0 is not None else math.nan,
                        pair.t1 if pair.img1 is not None else math.nan,
                        det0 if pair.img0 is not None else None, det1 if pair.img1 is not None else None,
                        ms, outside=False)

    def _detect(self, pair: FramePair) -> tuple[Detections, Detections]:
        jobs = self._jobs(self.detectors, pair)
        if self._pool is not None and pair.img0 is not None and pair.img1 is not None:
            futs = [self._pool.submit(d.detect, img, t) for d, img, t in jobs]
            return futs[0].result(), futs[1].result()
        return tuple(d.detect(img, t) if img is not None else Detections.empty() for d, img, t in jobs)

    def step(self, pair: FramePair | DetectionPair) -> Frame3D:
        """One stereo time step: images (FramePair, detected here) or an outside detector's boxes
        (DetectionPair: boxes, scores and classes as Detections)."""
        return self.track(self.detect(pair))

    def detect(self, pair: FramePair | DetectionPair) -> Detected:
        """The detection half of step(): touches only the detectors (the pipelined loop calls
        submit() on a thread of its own, a pair or two ahead of track())."""
        return self.submit(pair)()

    def submit(self, pair: FramePair | DetectionPair) -> Callable[[], Detected]:
        """Start detecting `pair`; the function returned finishes it (call those in the order of
        submission, at most DETECT_AHEAD unfinished). With detector processes both cameras' children
        work on it meanwhile, so the pipelined loop hands them the next pair before it takes this
        one's detections (a child never waits for this process between two images); otherwise all
        the work is done by the function. Its detect_ms: the slower child's own time, or the wall
        time of detection here."""
        if not (self.children and isinstance(pair, FramePair)):
            return lambda: self._detect_now(pair)
        jobs = self._jobs(self.children, pair)
        for d, img, t in jobs:
            if img is not None:
                d.submit(img, t)

        def finish() -> Detected:
            dets = [d.result() if img is not None else None for d, img, _ in jobs]
            return self._detected(pair, dets[0], dets[1],
                                  max((d.last_ms for d, img, _ in jobs if img is not None), default=0.0))

        return finish

    def _detect_now(self, pair: FramePair | DetectionPair) -> Detected:
        c0 = time.perf_counter()
        if isinstance(pair, DetectionPair):
            d0, d1 = self.detections_from_boxes(pair.boxes0), self.detections_from_boxes(pair.boxes1)
            return Detected(pair, pair.t0, pair.t1, d0, d1, (time.perf_counter() - c0) * 1e3, outside=True)
        d0, d1 = self._detect(pair)
        return self._detected(pair, d0, d1, (time.perf_counter() - c0) * 1e3)

    def track(self, d: Detected) -> Frame3D:
        """The rest of step() for a detected pair (in pair order: the trackers' state moves on)."""
        return self.step_detections(d.pair.index, d.t0, d.t1, d.det0, d.det1, wall=d.pair.wall,
                                    detect_ms=d.detect_ms, outside=d.outside)

    def detections_from_boxes(self, boxes: Optional[Boxes2D]) -> Optional[Detections]:
        if boxes is None:
            return None
        return Detections.from_boxes(boxes.boxes, boxes.scores, classes=boxes.classes)

    def step_detections(self, index: int, t0: float, t1: float, det0: Optional[Detections],
                        det1: Optional[Detections], wall: float = math.nan, detect_ms: float = 0.0,
                        outside: bool = True) -> Frame3D:
        """Everything after detection, for one stereo time step. det0/det1: each camera's
        detections (pixels) captured at t0/t1 (seconds, one clock); None (time NaN) = that camera
        gave nothing this step, and its tracks coast at the pair's time. outside: the boxes come
        from an outside detector (their centres get box noise unless the config sets it; False
        from our own detectors' step)."""
        if outside and not self.outside_boxes:
            self.outside_boxes = True
            self._apply_box_noise()
            log.info("outside detector boxes: box centres are triangulated with %.0f %% of the box size as noise",
                     100 * self.pixel_rel)
        tm: dict[str, float] = {}
        t = t0 if det0 is not None and math.isfinite(t0) else t1
        if not math.isfinite(t):
            # Neither camera delivered a frame (nor a time): coast one frame period on.
            t = (self._last_t + self._dt) if self._last_t is not None else 0.0
        if self._last_t is not None and t - self._last_t > self.reset_gap_s:
            self._reset_tracks(index, t - self._last_t)
        c1 = time.perf_counter()
        # A camera with no frame this time coasts at the pair's time.
        t0 = t0 if det0 is not None and math.isfinite(t0) else t
        t1 = t1 if det1 is not None and math.isfinite(t1) else t
        trk0, trk1 = self.trackers
        trk0.update(det0 if det0 is not None else Detections.empty(), t0, run_gate=False)
        trk1.update(det1 if det1 is not None else Detections.empty(), t1, run_gate=False)
        for c, trk in enumerate(self.trackers):
            self.detections_seen[c] += len(trk.last_detections)
        self._learn_aspects()
        self._note_classes()
        c2 = time.perf_counter()
        self._run_gate()
        for c, trk in enumerate(self.trackers):
            self.confirmed_max[c] = max(self.confirmed_max[c], int(np.count_nonzero(trk.confirmed)))
        c3 = time.perf_counter()
        if self._last_t is not None and 0 < t - self._last_t <= self.reset_gap_s:
            gap = t - self._last_t
            self._dt = gap if self._gaps == 0 else 0.9 * self._dt + 0.1 * gap
            self._gaps += 1
        self._last_t = t
        self._claim_pred = {}
        self._claim_taken = (set(), set())
        first: list[PairObservation] = []
        busy = (None, None)
        if self.cfg.claim.enabled and self.cfg.claim.first:
            first = self._claim(t, t1 - t0, [], first=True)
            busy = self._busy_2d(first)
        obs = self._associate(t, t1 - t0, *busy)
        claimed = first + self._claim(t, t1 - t0, obs, skip={o.track3d for o in first})
        obs = first + obs
        self.last_obs = obs  # this step's pairs (for analysis)
        c4 = time.perf_counter()
        self._triangulate(obs)
        self._check_claims(claimed)
        self._watch_pairing(t, sum(o.xyz is not None for o in obs))
        self.tracker3d.update(t, obs, frame=index)
        raw = {}
        by_pair = {(o.id0, o.id1): o for o in obs}
        self._note_classes_3d()
        reported = self.tracker3d.reported()
        for tr in reported:
            o = by_pair.get(tr.pair)
            if o is not None and o.xyz is not None:
                raw[tr.id] = o.xyz
        tracks = self._message_tracks(reported, t)
        c5 = time.perf_counter()
        tm.update(detect=detect_ms, track2d=(c2 - c1) * 1e3, gate=(c3 - c2) * 1e3,
                  associate=(c4 - c3) * 1e3, triangulate_kf=(c5 - c4) * 1e3)
        return Frame3D(index, t, tracks, tm, raw, wall)

    def _note_classes(self) -> None:
        """Remember the class of each 2D track's newest detection (outside detectors only)."""
        for trk, known in zip(self.trackers, self._classes):
            for i in trk.removed_ids:
                known.pop(int(i), None)
            cls = trk.last_detections.classes
            if cls is None:
                continue
            for i in np.flatnonzero(trk.matched):
                c = cls[trk.det_index[i]]
                if c is not None and c != -1:
                    known[int(trk.ids[i])] = c.item() if isinstance(c, np.generic) else c

    def _note_classes_3d(self) -> None:
        """Each live 3D track keeps the newest class of its camera 0 track, else camera 1's."""
        if not (self._classes[0] or self._classes[1] or self._class3d):
            return
        live = {}
        for tr in self.tracker3d.tracks:
            c = self._classes[0].get(int(tr.pair[0]))
            c = c if c is not None else self._classes[1].get(int(tr.pair[1]))
            c = c if c is not None else self._class3d.get(tr.id)
            if c is not None:
                live[tr.id] = c
        self._class3d = live

    def track_class(self, tr: Track3D):
        """A 3D track's class (from its detections' class labels), or None."""
        return self._class3d.get(tr.id)

    # Persistent 2D tracks in both views this long with no stereo pair: something is wrong.
    UNPAIRED_WARN_S = 3.0
    UNPAIRED_WARN_FRAMES = 20

    def _watch_pairing(self, t: float, n_pairs: int) -> None:
        """Warn once when both cameras have had persistent 2D tracks for a while and no pair
        triangulated (in front of both cameras): the signature of a wrong or swapped calibration,
        swapped cameras or a time offset."""
        trk0, trk1 = self.trackers
        both = bool((trk0.confirmed & trk0.persistent).any() and (trk1.confirmed & trk1.persistent).any())
        if n_pairs or not both:
            if n_pairs:
                self._unpaired = None
            return
        since, frames = self._unpaired or (t, 0)
        self._unpaired = (since, frames + 1)
        if frames + 1 >= self.UNPAIRED_WARN_FRAMES and t - since >= self.UNPAIRED_WARN_S:
            self.warn_once("no stereo pairs", f"both cameras have tracked objects for {t - since:.1f} s "
                           f"({frames + 1} frames) but none paired across the cameras into a 3D point: check the calibration "
                           "(R, T, units), the camera order (--cam0/--cam1) and the time offset between the cameras")

    def _run_gate(self) -> None:
        """One batched gate call over the live tracks of both cameras."""
        trk0, trk1 = self.trackers
        n0 = len(trk0)
        if n0 + len(trk1) == 0:
            return
        ids = np.concatenate([trk0.ids, trk1.ids + CAM1_KEY_OFFSET])
        hist = np.concatenate([trk0.hist, trk1.hist])  # one tracker config: same history length
        lens = np.concatenate([trk0.hlen, trk1.hlen])
        sizes = np.repeat([self.calib.cam0.image_size, self.calib.cam1.image_size], [n0, len(trk1)], axis=0)
        persistent, scores = self.gate(ids, hist, lens, image_size=sizes)
        trk0.apply_gate(persistent[:n0], scores[:n0])
        trk1.apply_gate(persistent[n0:], scores[n0:])

    def _view_points(self, c: int, skew: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray]:
        """Camera c's detections this frame: anchor points (distorted pixels, camera 1's moved to
        camera 0's time with their 2D track's velocity), sizes sqrt(w h) (pixels), the 2D track id
        that took each (-1: none), that track's row (-1), each axis's extra centre std of boxes cut
        by the border (N, 2; _anchors) and whether each touches the border."""
        trk = self.trackers[c]
        dets = trk.last_detections
        m = len(dets)
        owner, row = np.full(m, -1, np.int64), np.full(m, -1, np.int64)
        took = np.flatnonzero(trk.det_index >= 0)
        owner[trk.det_index[took]] = trk.ids[took]
        row[trk.det_index[took]] = took
        wh = dets.boxes[:, 2:] - dets.boxes[:, :2] if m else np.zeros((0, 2))
        uv, extra, touch = self._anchors(c, np.column_stack([(dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2, wh])
                                         if m else np.zeros((0, 4)))
        if self.pixel_rel <= 0 and m:  # a blob's point is its centroid
            uv = dets.centroids + np.column_stack([np.zeros(m), (0.5 if self.cfg.anchor == "bottom" else 0.0) * wh[:, 1]])
        if c == 1 and m and self.cfg.sync_correction and math.isfinite(skew) and skew != 0:
            has = row >= 0
            uv = uv.copy()
            uv[has] -= trk.kf.x[row[has], 4:6] * skew
        return uv, np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], 0.0)), owner, row, extra, touch

    def _busy_2d(self, claimed: list[PairObservation]) -> tuple[np.ndarray, np.ndarray]:
        """Per camera, the 2D tracks not free for new pairs after 3D tracks claimed first: those
        whose detection a 3D track took, and unmatched ones a live 3D track follows."""
        out = []
        for c, trk in enumerate(self.trackers):
            taken = {int(getattr(o, f"id{c}")) for o in claimed if getattr(o, f"seen{c}")}
            followed = {int(tr.pair[c]) for tr in self.tracker3d.tracks}
            out.append(np.fromiter((int(i) in taken or (not m and int(i) in followed)
                                    for i, m in zip(trk.ids, trk.matched)), bool, len(trk)))
        return out[0], out[1]

    def _claim(self, t: float, skew: float, obs: list[PairObservation], first: bool = False,
               skip: frozenset | set = frozenset()) -> list[PairObservation]:
        """Live 3D tracks claim detections by projected prediction (stereo.claim).

        first=True (before any 2D pairing, obs empty): every track with claim.min_updates stereo
        updates claims in both views among all detections; the detections it takes are kept in
        self._claim_taken. first=False (after pairing): the gaps of the 2D pairs: a track its own
        pair did not serve in a view (its 2D track missed, broke or switched objects, or its pair
        ended) takes its own 2D track's detection, or claims one that no pair, no followed 2D track
        and no earlier claim uses; a claim in a view its pair did not see joins that pair's
        observation. skip: tracks that claimed first. A track with no pair gets an observation of
        its own (appended to obs). Returns the observations of the tracks that claimed or joined."""
        tracks = self.tracker3d.tracks
        if not self.cfg.claim.enabled or not tracks:
            return []
        pair_obs = {(o.id0, o.id1): o for o in obs}
        in0, in1 = {o.id0 for o in obs}, {o.id1 for o in obs}
        served = np.zeros((len(tracks), 2), bool)
        mine: list[Optional[PairObservation]] = []
        for k, tr in enumerate(tracks):
            o = pair_obs.get(tr.pair)
            mine.append(o)
            if o is not None:
                served[k] = (o.seen0, o.seen1)
            elif tr.pair[0] in in0 or tr.pair[1] in in1:
                served[k] = True  # a new pair shares one of its 2D tracks: it takes the track over
            if tr.id in skip:
                served[k] = True  # it claimed before the pairs were made
        followed = [{int(tr.pair[c]) for tr in tracks} for c in (0, 1)]
        # Tracks claim once they have this many stereo updates (1, the default: all of them).
        established = np.array([tr.updates >= self.cfg.claim.min_updates for tr in tracks])
        if served.all():
            return []
        X, P = self.tracker3d.predicted(t)
        size_m = np.array([tr.size_m for tr in tracks])
        cal = self.calib
        views = []
        for c, (cam, R, T) in enumerate(((cal.cam0, np.eye(3), np.zeros(3)), (cal.cam1, cal.R, cal.T.reshape(3)))):
            uv, size, owner, row, extra, touch = self._view_points(c, skew)
            # Free: detections of no 2D track that a pair uses now or a live 3D track follows.
            by_pairs = set(int(getattr(o, f"id{c}")) for o in obs if getattr(o, f"seen{c}"))
            used = by_pairs | followed[c]
            taken = self._claim_taken[c]
            if first:  # before any pair: every detection is free, the predictions decide
                free = np.ones(len(owner), bool)
            else:
                free = np.fromiter((int(i) < 0 or int(i) not in used for i in owner), bool, len(owner))
            if taken:
                free[list(taken)] = False
            want = np.flatnonzero(~served[:, c] & established)
            det = np.full(len(tracks), -1, np.int64)
            d2 = np.full(len(tracks), np.inf)
            # Its own 2D track's detection first (the pair broke only because the other view's did).
            trk = self.trackers[c]
            row_of = {int(i): r for r, i in enumerate(trk.ids)}
            mine_c = []
            for k in want if not first else ():
                r = row_of.get(int(tracks[k].pair[c]), -1)
                d = int(trk.det_index[r]) if r >= 0 else -1
                if d >= 0 and int(owner[d]) not in by_pairs and d not in taken:
                    det[k], d2[k] = d, 0.0
                    mine_c.append(k)
            want = np.setdiff1d(want, mine_c)
            fd = np.flatnonzero(free)
            if len(want) and len(fd):
                uv_pred, S, z = project_predictions(cam.K, R, T, X[want], P[want], self.cfg.claim.min_depth)
                with np.errstate(invalid="ignore", divide="ignore"):
                    size_pred = np.where(z > 0, cam.K[0, 0] * size_m[want] / z, 0.0)
                sigma = np.maximum(self.cfg.pixel_sigma, self.pixel_rel * size[fd])
                cl = claim_view(uv_pred, S, size_pred, cam.undistort_points(uv[fd]), sigma, size[fd], self.cfg.claim)
                hit = cl.det >= 0
                det[want[hit]] = fd[cl.det[hit]]
                d2[want[hit]] = cl.d2[hit]
            views.append((det, d2, uv, size, owner, extra, touch))
            taken.update(int(d) for d in det[det >= 0])
        out = []
        for k, tr in enumerate(tracks):
            got = [views[c][0][k] for c in (0, 1)]
            if got[0] < 0 and got[1] < 0:
                continue
            o = mine[k]
            if o is None:
                o = PairObservation(-1, -1, False, False, None, None, tr.persistence, track3d=tr.id)
                o.view_size_px = (0.0, 0.0)
                obs.append(o)
            sizes = list(o.view_size_px)
            d2 = [0.0, 0.0]
            for c in (0, 1):
                d = got[c]
                if d < 0:
                    continue
                _, d2c, uv, size, owner, extra, touch = views[c]
                setattr(o, f"seen{c}", True)
                setattr(o, f"uv{c}", uv[d].copy())
                if o.track3d is not None:
                    setattr(o, f"id{c}", int(owner[d]))
                sizes[c] = float(size[d])
                d2[c] = float(d2c[k])
                cut = list(o.cut_sigma)
                cut[c] = (float(extra[d, 0]), float(extra[d, 1]))
                o.cut_sigma = (cut[0], cut[1])
                o.truncated = o.truncated or bool(touch[d])
            o.view_size_px = (sizes[0], sizes[1])
            o.size_px = float(np.sqrt((sizes[0] ** 2 + sizes[1] ** 2) / max(1, (sizes[0] > 0) + (sizes[1] > 0))))
            o.sigma_px = max(self.cfg.pixel_sigma, self.pixel_rel * max(sizes))
            o.claim_d2 = (d2[0], d2[1])
            o.claimed = (got[0] >= 0, got[1] >= 0)
            self._claim_pred[id(o)] = (X[k], P[k])  # the track's prediction, for _check_claims
            out.append(o)
        return out

    def _check_claims(self, claimed: list[PairObservation]) -> None:
        """A claim whose triangulation (with the other view) contradicts the track's prediction is
        withdrawn: the other view alone updates the track."""
        gate = self.tracker3d.cfg.gate_chi2
        for o in claimed:
            if o.xyz is None or not (o.seen0 and o.seen1):
                continue
            x, P = self._claim_pred[id(o)]
            y = o.xyz - x
            layer = self.associator.height_layer
            in_layer = layer is None or abs(float(o.xyz @ layer[0]) - layer[1] - layer[2]) <= layer[3]
            if in_layer and float(y @ np.linalg.solve(P + o.cov, y)) <= gate:
                continue
            # Drop the claimed view (if both were claimed: the one that fits worse).
            c = 0 if o.claimed[0] and (not o.claimed[1] or o.claim_d2[0] >= o.claim_d2[1]) else 1
            setattr(o, f"seen{c}", False)
            setattr(o, f"uv{c}", None)
            o.xyz = o.cov = None
            o.size_m = 0.0

    def _associate(self, t: float, skew: float, busy0: Optional[np.ndarray] = None,
                   busy1: Optional[np.ndarray] = None) -> list[PairObservation]:
        """Pairs of eligible 2D tracks (busy0/busy1: masks of 2D tracks left out, see _busy_2d)."""
        trk0, trk1 = self.trackers
        # Eligible: persistent tracks, and, under a hit-count rule, tracks already in a pair while
        # they live (the rule drops a track for min_hits frames after one missed detection, 1.5 s at
        # 2 fps; the pair should not break for it). A learned gate's "not persistent" is evidence of
        # a false track, so it ends pairs as before.
        p0, p1 = self.associator.pairs, set(self.associator.pairs.values())
        hold = gate_counts_hits(self.gate)
        held0 = np.fromiter((hold and int(i) in p0 for i in trk0.ids), bool, len(trk0))
        held1 = np.fromiter((hold and int(i) in p1 for i in trk1.ids), bool, len(trk1))
        elig0 = trk0.confirmed & (trk0.persistent | held0)
        elig1 = trk1.confirmed & (trk1.persistent | held1)
        # Stereo confirmation at low rates: when the hit-count rule's min_hits frames span its whole
        # window (2 fps: 3 hits = every frame for 1 s), a track observed now one hit short of it is
        # eligible too, and a pair needs that many joint observations: two cameras agreeing over
        # min_hits - 1 frames is the missing hit's evidence. (2D outputs still wait for the rule.)
        rule = hit_count_rule(self.gate)
        # On the ground (--ground) two cameras agreeing at first sight on a point at the tracks'
        # height, of one size, are that evidence: any 2D track observed now may pair, on one joint
        # observation. A one-frame flash still never shows: a 3D track is reported from its second
        # stereo update (Track3DConfig.min_updates).
        need = None
        if rule is not None and rule.min_hits > 2 and (rule.min_hits - 1) * self._dt >= rule.window_s - 1e-9:
            floor = 1 if self.cfg.ground else rule.min_hits - 1
            need = min(self.associator.cfg.min_common, floor)
            elig0 |= trk0.matched & (trk0.hits >= floor)
            elig1 |= trk1.matched & (trk1.hits >= floor)
        if busy0 is not None:
            elig0 &= ~busy0
            elig1 &= ~busy1
        idx0, idx1 = np.flatnonzero(elig0), np.flatnonzero(elig1)
        self.associator.height_layer = self._height_layer()
        pairs = self.associator.associate(trk0, idx0, trk1, idx1, t, self._dt, min_common=need)
        obs = []
        m0, m1 = trk0.measured(), trk1.measured()
        # The box point that is the object: the box centre, or the middle of the bottom edge (of the
        # box completed where the border cut it).
        a0, a1 = self._anchors(0, m0), self._anchors(1, m1)
        if not pairs:
            return obs
        # Per pair, as arrays first (one numpy call per quantity, not per pair), then the objects.
        i = np.array([p[0] for p in pairs], np.intp)
        j = np.array([p[1] for p in pairs], np.intp)
        uv0 = a0[0][i]
        # Camera 1's observation moved to camera 0's capture time with its image velocity.
        shift = -skew if (self.cfg.sync_correction and math.isfinite(skew)) else 0.0
        uv1 = a1[0][j] + trk1.kf.x[j, 4:6] * shift
        area0, area1 = np.maximum(m0[i, 2] * m0[i, 3], 0.0), np.maximum(m1[j, 2] * m1[j, 3], 0.0)
        size0, size1 = np.sqrt(area0).tolist(), np.sqrt(area1).tolist()
        size = (np.sqrt(area0 + area1) / math.sqrt(2)).tolist()
        persistence = np.minimum(trk0.gate_score[i], trk1.gate_score[j]).tolist()
        cut = np.hstack([a0[1][i], a1[1][j]]).tolist()
        truncated = (a0[2][i] | a1[2][j]).tolist()
        ids0, ids1 = trk0.ids[i].tolist(), trk1.ids[j].tolist()
        seen0, seen1 = trk0.matched[i].tolist(), trk1.matched[j].tolist()
        evidence = self.associator.evidence_s
        for k, (ik, jk) in enumerate(zip(i.tolist(), j.tolist())):
            o = PairObservation(ids0[k], ids1[k], seen0[k], seen1[k], uv0[k], uv1[k], persistence[k])
            o.evidence_s = evidence.get((ik, jk), 0.0)
            o.view_size_px = (size0[k], size1[k])
            o.size_px = size[k]
            c = cut[k]
            o.cut_sigma = ((c[0], c[1]), (c[2], c[3]))
            o.truncated = truncated[k]
            obs.append(o)
        return obs

    # Objects on the ground (planar motion): the layer of heights their tracks keep to.
    HEIGHT_LAYER_MIN_TRACKS = 3  # reported tracks before the layer is known
    HEIGHT_LAYER_MIN_TOL = 0.15  # metres: the layer's half-width at least ...
    HEIGHT_LAYER_MADS = 4.0  # ... or this many robust standard deviations of the tracks' heights

    def _height_layer(self) -> Optional[tuple[np.ndarray, float, float, float]]:
        """(up, offset, height, tolerance) of the layer of heights the reported 3D tracks keep to,
        world metres, when motion is planar and enough tracks are known; else None."""
        t3 = self.tracker3d
        if not t3.planar:
            return None
        rep = [tr for tr in t3.reported() if tr.state == "tracked"]
        if len(rep) < self.HEIGHT_LAYER_MIN_TRACKS:
            return None
        off = float(t3.up @ np.asarray(self.calib.t_world, float).reshape(3))
        h = t3.states(rep)[0] @ t3.up - off
        med = float(np.median(h))
        tol = max(self.HEIGHT_LAYER_MIN_TOL, self.HEIGHT_LAYER_MADS * 1.4826 * float(np.median(np.abs(h - med))))
        return t3.up, off, med, tol

    def _anchors(self, c: int, cxcywh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera c's boxes (N, 4) [cx, cy, w, h] -> the points that are the object (distorted
        pixels: the box centre, or the middle of its bottom edge with anchor 'bottom'), each axis's
        extra centre std (N, 2, see boxcut.complete_boxes) and whether the box touches the border
        (N,). An outside detector's box cut by the border is completed first (the view's aspect
        ratio); our blob detectors' are not (a truncated blob is not triangulated at all)."""
        cam = self.calib.cam0 if c == 0 else self.calib.cam1
        b = np.asarray(cxcywh, float).reshape(-1, 4)
        xyxy = np.column_stack([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2])
        sides = cut_sides(xyxy, cam.width, cam.height, self.cfg.border_px)
        extra = np.zeros((len(b), 2))
        if self.pixel_rel > 0 and self.cfg.complete_cut and sides.any():
            xyxy, extra = complete_boxes(xyxy, sides, self.aspects[c].estimate())
        down = 0.5 if self.cfg.anchor == "bottom" else 0.0
        uv = np.column_stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2 + down * (xyxy[:, 3] - xyxy[:, 1])])
        return uv, extra, sides.any(axis=1)

    def _learn_aspects(self) -> None:
        """Each view's box aspect ratio from this frame's uncut detections (outside boxes only)."""
        if self.pixel_rel <= 0:
            return
        for c, trk in enumerate(self.trackers):
            boxes = trk.last_detections.boxes
            if len(boxes):
                cam = self.calib.cam0 if c == 0 else self.calib.cam1
                self.aspects[c].add(boxes, cut_sides(boxes, cam.width, cam.height, self.cfg.border_px))

    def _triangulate(self, obs: list[PairObservation]) -> None:
        c = self.cfg
        both = [o for o in obs if o.seen0 and o.seen1 and (self.truncated_rel > 0 or not o.truncated)]
        if not both:
            return
        sigma = np.array([max(c.pixel_sigma, (self.truncated_rel if o.truncated else self.pixel_rel) * o.size_px)
                          for o in both])
        # Per view and axis (x0, y0, x1, y1): a cut box's completed centre is less certain along the cut.
        sigma = np.hstack([axis_sigma(sigma, np.array([o.cut_sigma[v] for o in both]),
                                      np.array([o.view_size_px[v] for o in both])) for v in (0, 1)])
        tri = triangulate(self.calib, np.array([o.uv0 for o in both]), np.array([o.uv1 for o in both]),
                          pixel_sigma=sigma, reprojection=False)
        cal = self.calib
        valid = tri.valid.tolist()
        z0s = tri.xyz[:, 2].tolist()
        z1s = (tri.xyz @ cal.R[2] + cal.T.reshape(3)[2]).tolist()  # depths in camera 1
        f0, f1 = float(cal.cam0.K[0, 0]), float(cal.cam1.K[0, 0])
        for k, o in enumerate(both):
            if valid[k]:
                o.xyz, o.cov = tri.xyz[k], tri.cov[k]
                z0, z1 = z0s[k], z1s[k]
                s0, s1 = o.view_size_px
                if s0 > 0 and s1 > 0 and z0 > 0 and z1 > 0:
                    o.size_m = 0.5 * (s0 * z0 / f0 + s1 * z1 / f1)

    def smoothed_states(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """After the input ended (and keep_log): {(3D id, frame): (state, covariance)} smoothed by RTS."""
        self.tracker3d.finish()
        out = {}
        for tr in self.tracker3d.finished:
            frames, xs, Ps = tr.smoothed()
            for f, x, P in zip(frames, xs, Ps):
                out[(tr.id, int(f))] = (x, P)
        return out

    def offline_states(self, reported: set[int]) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """After the input ended (and keep_log): the offline tracks, {(3D id, frame): (state,
        covariance)}, camera 0 frame: every 3D track reported at least once (ids in `reported`),
        RTS-smoothed over its life, on the frames the live reporting rule accepts (Tracker3D.offline)."""
        self.tracker3d.finish()
        return self.tracker3d.offline(reported)

    def offline_frames(self, frames: list[Frame3D]) -> None:
        """After the input ended (and keep_log): each collected frame's track entries become the
        offline tracks on it (offline_states of the ids reported anywhere in `frames`), in message
        format: reported entries keep their fields with the smoothed state; a frame a track gains
        (before it was confirmed, or a gap) gets an entry like a live one, with the track's last
        persistence score and state 'tracked' (a stereo update then) or 'coasting' (one view)."""
        states = self.offline_states({int(e["id"]) for f3 in frames for e in f3.tracks})
        by_id = {tr.id: tr for tr in self.tracker3d.finished}
        per_frame: dict[int, list] = {}
        for (i, f), s in sorted(states.items()):
            per_frame.setdefault(f, []).append((i, s))
        for f3 in frames:
            old = {int(e["id"]): e for e in f3.tracks}
            entries = []
            for i, (x, P) in per_frame.get(f3.index, []):
                fields = self.state_fields(x[:3], x[3:6], P[:3, :3])
                e = old.get(i)
                if e is None:
                    tr = by_id[i]
                    stereo = tr.log_stereo[tr.log_frame.index(f3.index)]
                    e = {"id": i, **fields, "persistence": round(float(tr.persistence), 4),
                         "age_s": round(float(f3.t - tr.born_t), 4), "state": "tracked" if stereo else "coasting",
                         "cam0": None, "cam1": None,
                         **({"class": c} if (c := self.track_class(tr)) is not None else {})}
                entries.append(dict(e, **fields))
            f3.tracks = entries

    def state_fields(self, xyz: np.ndarray, vel: np.ndarray, cov: np.ndarray) -> dict:
        """A camera-0-frame state as the message's xyz/vel/cov fields, in the published frame
        (world when the calibration has one), rounded for the wire."""
        return self.states_fields(xyz[None], vel[None], cov[None])[0]

    def states_fields(self, xyz: np.ndarray, vel: np.ndarray, cov: np.ndarray) -> list[dict]:
        """state_fields of n states at once: positions and velocities (n,3), covariances (n,3,3)."""
        if self.calib.has_world:
            Rw = self.calib.R_world.T
            xyz, vel, cov = self.calib.to_world(xyz), (Rw @ vel[:, :, None])[:, :, 0], Rw @ cov @ Rw.T
        n = len(xyz)
        if n == 0:
            return []
        # In batch: the same floats as round(v, 5), round(v, 4) and float(f"{v:.6g}") one by one.
        c = significant(cov, 6)
        x = rounded(xyz, 5)
        w = rounded(vel, 4)
        return [{"xyz": x[i:i + 3], "vel": w[i:i + 3], "cov": [c[j:j + 3], c[j + 3:j + 6], c[j + 6:j + 9]]}
                for i, j in zip(range(0, 3 * n, 3), range(0, 9 * n, 9))]

    @property
    def frame_id(self) -> str:
        return "world" if self.calib.has_world else "cam0"

    def _message_tracks(self, tracks: list[Track3D], t: float) -> list[dict]:
        """The message's track entries of live 3D tracks (their states converted in one batch)."""
        if not tracks:
            return []
        # Rounded in batch (the same floats as round() one by one): persistence and age, then
        # each view's uv of the tracks that have one.
        n = len(tracks)
        pa = rounded(np.array([[tr.persistence, t - tr.born_t] for tr in tracks], float), 4)
        views = []
        for c in (0, 1):
            has = [tr for tr in tracks if getattr(tr, f"uv{c}") is not None and tr.pair[c] >= 0]
            uv = rounded(np.array([getattr(tr, f"uv{c}") for tr in has], float).reshape(-1, 2), 2)
            views.append({id(tr): {"track": int(tr.pair[c]), "uv": uv[2 * k:2 * k + 2]} for k, tr in enumerate(has)})
        cam0, cam1 = views
        return [{
            "id": tr.id, **fields, "persistence": pa[2 * k], "age_s": pa[2 * k + 1], "state": tr.state,
            "cam0": cam0.get(id(tr)), "cam1": cam1.get(id(tr)),
            **({"class": c} if (c := self.track_class(tr)) is not None else {}),
        } for k, tr, fields in zip(range(n), tracks, self.states_fields(*self.tracker3d.states(tracks)))]


class StreamingQuantiles:
    """Median / p99 of a long stream of non-negative values (ms) in constant memory.

    A histogram with log-spaced bins (each `rel` wider than the last) from `lo` to `hi`: any
    quantile is within `rel` (relative) of the exact one, and an hour at 30 fps costs the same
    ~20 KB as a second. Values at or below `lo` (or above `hi`) are counted in the end bins;
    quantiles are clamped to the exact minimum and maximum seen.
    """

    def __init__(self, lo: float = 1e-4, hi: float = 1e7, rel: float = 0.005):
        self._lo, self._log_step = lo, math.log1p(rel)
        self._n_bins = int(math.ceil(math.log(hi / lo) / self._log_step)) + 2
        self.counts = np.zeros(self._n_bins, np.int64)
        self.n = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, v: float) -> None:
        if not math.isfinite(v):
            return
        i = 0 if v <= self._lo else min(self._n_bins - 1, 1 + int(math.log(v / self._lo) / self._log_step))
        self.counts[i] += 1
        self.n += 1
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    def __len__(self) -> int:
        return self.n

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1; the sample at rank floor(q (n-1)), numpy's "lower"), as the geometric
        middle of the bin that holds it."""
        if self.n == 0:
            return math.nan
        i = int(np.searchsorted(np.cumsum(self.counts), math.floor(q * (self.n - 1)) + 1))
        v = self._lo * math.exp((i - 0.5) * self._log_step) if i > 0 else self.min
        return float(min(max(v, self.min), self.max))


@dataclass
class RunStats:
    pairs_in: int = 0
    processed: int = 0
    published: int = 0
    # live, pipelined: detected pairs replaced by a newer one before tracking took them (newest wins)
    dropped_stale: int = 0
    timings: dict[str, StreamingQuantiles] = field(
        default_factory=lambda: {s: StreamingQuantiles() for s in STAGES + ("latency",)})
    tracks_max: int = 0
    wall_s: float = 0.0
    pipelined: bool = False
    warnings: list[str] = field(default_factory=list)  # said once each by the pipeline
    decoded_by: str = "reader"  # who decoded the images: the source's reader, or the detector processes

    def summary(self, source_stats: Optional[dict] = None, publisher=None) -> dict:
        out = {"pairs_in": self.pairs_in, "processed": self.processed, "published": self.published,
               "tracks_max": self.tracks_max, "wall_s": round(self.wall_s, 3),
               "pairs_per_s": self.processed / self.wall_s if self.wall_s > 0 else float("nan"),
               "pipelined": self.pipelined, "dropped_stale": self.dropped_stale, "decoded_by": self.decoded_by}
        for k, v in self.timings.items():
            if len(v):
                out[f"{k}_ms_median"] = v.quantile(0.5)
                out[f"{k}_ms_p99"] = v.quantile(0.99)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if source_stats:
            out["source"] = source_stats
        if publisher is not None:
            out["zmq"] = publisher.stats.as_dict()
        return out


PIPELINE_QUEUE = 1  # pairs that may wait between two stages (read -> detect -> track)
DETECT_AHEAD = SLOTS  # pairs the detect stage may have handed to detector processes and not yet taken back
IN_FLIGHT = 2 * PIPELINE_QUEUE + DETECT_AHEAD + 1  # pairs read but not yet tracked, at most (waiting or in a stage)
STOP_POLL_S = 0.1  # the tracking thread checks stop() at least this often while it waits


def run(source, pipeline: StereoPipeline, publisher=None, on_frame: Optional[Callable[[Frame3D], None]] = None,
        recorder=None, max_pairs: Optional[int] = None, progress=None,
        stop: Optional[Callable[[], bool]] = None, pipelined: Optional[bool] = None,
        images_needed: bool = True) -> RunStats:
    """Drive `pipeline` with pairs from `source` until it ends (or Ctrl-C / stop()).

    Live sources hand over only their newest pair (a slow loop drops, never queues); recordings
    and files are lossless. Each processed pair goes to recorder.write (just before it is
    tracked), is published, and goes to on_frame, all on the calling thread and in pair order.
    progress: an object with update(n) and close() (a tqdm bar), advanced per processed pair.
    pipelined (default: the pipeline's config): one thread reads (decodes) pairs, another detects
    the next pair while this one is tracked and published, through hand-offs of PIPELINE_QUEUE
    pairs: lossless for files and recordings (same pairs, same order, same tracks as the plain
    loop), newest-wins for a live source (a stale pair is replaced: RunStats.dropped_stale).
    Latency is always from the pair's capture (or arrival) to its publication.
    images_needed=False: nothing but the detectors looks at the images (no recorder or on_frame
    that draws on them); a recording's Motion-JPEG videos are then decoded by the detector
    processes, each its own camera's (RecordingReader.decode_in_detectors; RunStats.decoded_by).
    """
    st = RunStats()
    if not images_needed and getattr(pipeline, "children", None) and hasattr(source, "decode_in_detectors") \
            and source.decode_in_detectors():
        st.decoded_by = "detector processes"
    if pipelined is None:
        pipelined = bool(getattr(getattr(pipeline, "cfg", None), "pipelined", False))
    st.pipelined = pipelined
    live = bool(getattr(source, "live", False))
    if getattr(source, "images", True) and hasattr(pipeline, "wait_ready"):
        pipeline.wait_ready()  # detector processes started: not inside the first pair's latency
    # Everything built so far (models, modules, the calibration) lives as long as the run: out of
    # the collector's sight, a full collection in the loop takes a few ms instead of ~100 (a live
    # pair stalled every few seconds). Thawed at the end: whatever of it is garbage by then is
    # collected as usual, so repeated runs leak nothing.
    gc.freeze()
    # A pipelined replay keeps the detector children busy with pairs in turn and is faster with
    # them free to run on any core (10 objects: 89-104 pairs/s against 80-93 pinned in six
    # interleaved pairs of runs, 82-95 against 69-104 in seven more): there they are let go.
    freed = free_children(pipeline, live, pipelined)
    cores = TrackCore.for_run(pipeline, live, pipelined)
    start = time.perf_counter()
    bar = progress

    def arrivals(halted: Callable[[], bool]):
        """Pairs as they are read, with their capture (or arrival) wall time, counted in."""
        while not halted() and (live or max_pairs is None or st.pairs_in < max_pairs):
            if stop is not None and stop():
                return
            c = time.thread_time()
            pair = source.read(timeout=0.5)
            if cores is not None:  # this thread's CPU (decoding), for the tracking core's choice
                cores.read_s += time.thread_time() - c
            if pair is None:
                if live and not getattr(source, "ended", False):
                    continue  # a live source had nothing new yet
                return
            captured = math.isfinite(pair.wall)  # files and recordings have no capture wall time
            if not captured:
                pair.wall = time.time()
            st.pairs_in += 1
            yield pair, captured

    def finish(det: Detected, captured: bool) -> None:
        """Track, publish and hand on one detected pair."""
        cpu = time.thread_time()
        if recorder is not None:
            recorder.write(det.pair)
        f3 = pipeline.track(det)
        c = time.perf_counter()
        latency = (time.time() - det.pair.wall) * 1e3  # the summary's: from arrival where not captured
        f3.latency_ms = latency if captured else None
        f3.age_ms = latency
        if publisher is not None:
            publisher.publish(f3.index, f3.t, f3.tracks, latency_ms=f3.latency_ms)
            st.published += 1
        f3.timings["publish"] = (time.perf_counter() - c) * 1e3
        for k, v in f3.timings.items():
            st.timings[k].add(v)
        st.timings["latency"].add(latency)
        st.processed += 1
        st.tracks_max = max(st.tracks_max, len(f3.tracks))
        if on_frame is not None:
            on_frame(f3)
        if bar is not None:
            bar.update(1)
        if cores is not None:
            cores.note_track(time.thread_time() - cpu)

    stages: list[ProducerThread] = []
    try:
        if not pipelined:
            for pair, captured in arrivals(lambda: max_pairs is not None and st.processed >= max_pairs):
                finish(pipeline.detect(pair), captured)
        else:
            # Three stages, each on its thread: read (decode) pair k+2, detect pair k+1, track pair k.
            reads = HandOff(PIPELINE_QUEUE, newest_wins=live)
            stages.append(ProducerThread(arrivals, reads, name="read").start())

            def detected(halted):
                # Pairs handed to the detectors, oldest first: the next one goes in before this
                # one's detections are taken, when it is there already (replay); a live pair's
                # detections are taken at once (no latency added waiting for the next capture).
                started: deque = deque()
                mark = [time.thread_time()]

                def taken() -> tuple[Detected, bool]:
                    finish, captured = started.popleft()
                    det = finish()
                    if cores is not None:  # this thread's CPU, for the tracking core's choice
                        now = time.thread_time()
                        cores.detect_s += now - mark[0]
                        mark[0] = now
                    return det, captured

                try:
                    while not halted():
                        item = reads.take(timeout=0.0 if started else STOP_POLL_S)
                        if item is END:
                            break
                        if item is not EMPTY:
                            started.append((pipeline.submit(item[0]), item[1]))
                        if started and (item is EMPTY or len(started) >= DETECT_AHEAD):
                            yield taken()
                finally:  # the reader's end or error comes after the pairs read before it
                    while started and not halted():
                        yield taken()

            handoff = HandOff(PIPELINE_QUEUE, newest_wins=live)
            stages.append(ProducerThread(detected, handoff, name="detect").start())
            if cores is not None:
                cores.stage_threads = [stage.native_id for stage in stages]
            while max_pairs is None or st.processed < max_pairs:
                if stop is not None and stop():
                    break
                item = handoff.take(timeout=STOP_POLL_S)
                if item is END:
                    break
                if item is not EMPTY:
                    finish(*item)
    except KeyboardInterrupt:
        log.info("interrupted: shutting down")
    except RunFailure as exc:  # the pairs done before it are in the outputs: say how many
        exc.processed, exc.stats = st.processed, st
        raise
    finally:
        for stage in reversed(stages):  # the tracking side first: the reader may be waiting on it
            stage.stop()
        st.dropped_stale = sum(stage.handoff.dropped for stage in stages)
        st.wall_s = time.perf_counter() - start
        if cores is not None:
            cores.close()
        for d in freed:
            d.pin(None)  # back on its own core
        st.warnings = list(getattr(pipeline, "warnings", []))
        gc.unfreeze()
        if bar is not None:
            bar.close()
    return st
