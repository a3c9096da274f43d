"""Saving and loading PersistenceTransformer weights safely.

A weights file `NAME.pt` (torch.save of plain dicts and tensors, loaded with weights_only=True, so
no pickled code ever runs) travels with its model card `NAME.json`: the SHA-256 of the .pt file,
the architecture, the gate thresholds, the training data and the held-out metrics. Loading checks
the checksum and the architecture; any problem is one clear `WeightsError` naming the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from .model import ModelConfig, PersistenceTransformer

FORMAT = "tracker3d.persistence"
VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "persistence_v1.pt"


from .errors import WeightsError  # noqa: E402,F401  (re-exported)


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(path: str | Path, model: PersistenceTransformer, on: float, off: float, card: dict[str, Any]) -> Path:
    """Write NAME.pt and its model card NAME.json (with the checksum); returns the card's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "config": model.config.as_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "on": float(on), "off": float(off)}
    torch.save(blob, path)
    full = dict(card)
    full.update({"format": FORMAT, "version": VERSION, "weights": path.name, "sha256": sha256(path),
                 "bytes": path.stat().st_size, "config": model.config.as_dict(), "parameters": model.n_parameters(),
                 "on": float(on), "off": float(off)})
    cp = card_path(path)
    cp.write_text(json.dumps(full, indent=2) + "\n")
    return cp


def read_card(path: str | Path) -> dict:
    cp = card_path(path)
    if not cp.exists():
        raise WeightsError(f"{path}: no model card {cp.name} beside it (expected the .json that "
                           "'tracker3d persistence train' writes with the weights' checksum)")
    try:
        card = json.loads(cp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{cp}: not valid JSON ({e})") from None
    if not isinstance(card, dict) or not isinstance(card.get("sha256"), str):
        raise WeightsError(f"{cp}: field 'sha256' missing (expected the weights' SHA-256 hex digest)")
    return card


def load(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[PersistenceTransformer, dict]:
    """(model in eval mode on `device`, model card) from NAME.pt; the default is the shipped model."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    card = read_card(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["sha256"]:
        raise WeightsError(f"{path}: checksum {digest[:12]}... does not match its model card's "
                           f"{card['sha256'][:12]}... (file changed or corrupt)")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for malformed files
        raise WeightsError(f"{path}: not a loadable weights file ({type(e).__name__}: {str(e).splitlines()[0]})") \
            from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path}: field 'format' is not {FORMAT!r}")
    if blob.get("version") != VERSION:
        raise WeightsError(f"{path}: version {blob.get('version')!r}, this tracker3d reads version {VERSION}")
    known = {f.name for f in fields(ModelConfig)}
    cfg = blob.get("config")
    if not isinstance(cfg, dict) or set(cfg) != known:
        raise WeightsError(f"{path}: field 'config' must have exactly {sorted(known)}")
    try:
        model = PersistenceTransformer(ModelConfig(**cfg))
        model.load_state_dict(blob.get("state_dict", {}), strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: weights do not fit the architecture in 'config' "
                           f"({str(e).splitlines()[0]})") from None
    for name, tensor in blob["state_dict"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"{path}: tensor {name!r} holds {bad} of {tensor.numel()} NaN or infinite values "
                               "(training diverged? retrain or use the shipped weights)")
    for k in ("on", "off"):
        v = blob.get(k)
        if not isinstance(v, float) or not 0.0 <= v <= 1.0 or math.isnan(v):
            raise WeightsError(f"{path}: field {k!r} must be a threshold in [0, 1], got {v!r}")
    card = dict(card, on=blob["on"], off=blob["off"])
    model.eval()
    return model.to(device), card
