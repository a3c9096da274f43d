"""Frame sources, stereo pairing, recording and replay, and ZMQ publishing of 3D tracks.

Imports calib, numpy, cv2 and zmq only.
"""
from .detections import Boxes2D, DetectionFolder, DetectionPair, read_det_file
from .detstream import DetectionPublisher, DetectionStream
from .errors import SchemaError, StreamError
from .frames import Frame, FramePair, VideoImage
from .messages import SCHEMA, TOPIC, decode, encode, make_message, validate_message
from .pairing import LiveStereoSource, StereoSource, TimePairedSource, open_stereo
from .publisher import DEFAULT_ENDPOINT, Subscriber, TrackPublisher, subscribe
from .recording import RecordingReader, RecordingWriter
from .sources import FrameSource, ImageFolderSource, LiveSource, VideoFileSource, open_source

__all__ = [
    "Boxes2D", "DetectionFolder", "DetectionPair", "DetectionPublisher", "DetectionStream", "read_det_file",
    "DEFAULT_ENDPOINT", "Frame", "FramePair", "FrameSource", "ImageFolderSource", "LiveSource",
    "LiveStereoSource", "RecordingReader", "RecordingWriter", "SCHEMA", "SchemaError", "StereoSource",
    "StreamError", "Subscriber", "TOPIC", "TimePairedSource", "TrackPublisher", "VideoFileSource", "VideoImage", "decode",
    "encode", "make_message", "open_source", "open_stereo", "subscribe", "validate_message",
]
