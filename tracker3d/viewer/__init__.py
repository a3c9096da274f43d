"""The 3D viewer: message handling (state, no graphics), Open3D scene, headless snapshots and the
interactive window. Only scene, snapshot and window import open3d."""
