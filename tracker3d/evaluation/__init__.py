"""Scores against ground truth: eval2d (per-camera MOT metrics via trackeval), eval3d (3D
tracks against gt.csv), runs (a whole recording or live sim run through the pipeline, scored)."""
