"""Frame sources, stereo pairing, recording and replay, and ZMQ publishing of 3D tracks."""
