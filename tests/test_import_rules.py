"""The package map in docs/DESIGN.md, checked on the source: who may import whom.

Walks every module's imports (top level and inside functions) with `ast`, resolves relative
imports, and checks each against the rules. A new folder under tracker3d/ must be added here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("calib", "streams", "persistence", "tracker3d")
STAGES = ("tracker3d.detect", "tracker3d.track2d", "tracker3d.stereo")
APP = ("tracker3d.pipeline", "tracker3d.run2d", "tracker3d.cli", "tracker3d.commands", "tracker3d.bench",
       "tracker3d.evaluation", "tracker3d.outputs", "tracker3d.viewer", "tracker3d.sim")

# module prefix -> prefixes it must never import
FORBIDDEN = {
    "calib": ("tracker3d", "streams", "persistence"),
    "persistence": ("tracker3d", "streams", "calib"),
    "streams": ("tracker3d", "persistence"),
    **{stage: ("streams",) + APP for stage in STAGES},
    "tracker3d.pipeline": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.evaluation",
                           "tracker3d.outputs", "tracker3d.viewer", "tracker3d.sim"),
    "tracker3d.handoff": ("streams", "calib", "persistence") + STAGES + APP,  # threads only: knows no data
    "tracker3d.run2d": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.evaluation",
                        "tracker3d.outputs", "tracker3d.viewer", "tracker3d.sim", "streams"),
    "tracker3d.evaluation": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.viewer"),
    "tracker3d.outputs": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.pipeline",
                          "tracker3d.evaluation"),
    "tracker3d.viewer": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.pipeline",
                         "tracker3d.evaluation"),
    "tracker3d.bench": ("tracker3d.cli",),  # it times what the commands run, with their defaults
    "tracker3d.batch": ("tracker3d.cli",),  # it runs what the commands run, many times over
    # the simulated world knows nothing of the tracker; only its gate-data generator runs stages
    "tracker3d.sim": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.pipeline",
                      "tracker3d.evaluation", "tracker3d.outputs", "tracker3d.viewer") + STAGES,
    "tracker3d.sim.gate_data": ("tracker3d.commands", "tracker3d.cli", "tracker3d.bench", "tracker3d.pipeline",
                                "tracker3d.evaluation", "tracker3d.outputs", "tracker3d.viewer"),
}
# The one MOTChallenge parser is streams.mot (detections folders read it too): track2d's file module
# may import that module, and nothing else of streams.
FORBIDDEN["tracker3d.track2d.mot"] = APP + tuple(
    f"streams.{p.stem}" for p in sorted((ROOT / "streams").glob("*.py")) if p.stem not in ("__init__", "mot"))
# The detector's child process (a runner, not a detector) decodes the VideoImages it is handed:
# it may import the module that reads them and the two it needs (the image type, the error).
FORBIDDEN["tracker3d.detect.process"] = APP + tuple(
    f"streams.{p.stem}" for p in sorted((ROOT / "streams").glob("*.py"))
    if p.stem not in ("__init__", "videoimages", "frames", "errors"))
KNOWN_FOLDERS = {"detect", "track2d", "stereo", "evaluation", "outputs", "viewer", "sim", "bench", "batch",
                 "commands"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import submodule` imports the submodule too
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _rule_for(module: str) -> tuple[str, ...]:
    best = max((k for k in FORBIDDEN if module == k or module.startswith(k + ".")), key=len, default=None)
    return FORBIDDEN.get(best, ())


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_import_rules_hold():
    broken = []
    for path in _sources():
        mod = _module_name(path)
        for forbidden in _rule_for(mod):
            if _under(mod, forbidden):
                continue  # a package may import itself
            for name in _imports(path):
                if _under(name, forbidden):
                    broken.append(f"{path.relative_to(ROOT)} imports {name} (rule: {mod} never imports {forbidden})")
    assert not broken, "\n".join(broken)


def test_open3d_only_in_the_viewer():
    offenders = [str(p.relative_to(ROOT)) for p in _sources()
                 if any(_under(n, "open3d") for n in _imports(p))
                 and not _module_name(p).startswith("tracker3d.viewer")]
    assert not offenders


def test_every_tracker3d_folder_has_a_rule():
    folders = {p.name for p in (ROOT / "tracker3d").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == KNOWN_FOLDERS, "add the new folder to FORBIDDEN and to docs/DESIGN.md's map"


@pytest.mark.parametrize("module,name", [("tracker3d.track2d.tracker", "streams.frames"),
                                         ("tracker3d.track2d.tracker", "streams.mot"),
                                         ("tracker3d.track2d.mot", "streams.sources"),
                                         ("tracker3d.detect.process", "streams.recording"),
                                         ("tracker3d.detect.background", "streams.videoimages"),
                                         ("calib.io", "tracker3d.pipeline")])
def test_the_rule_check_catches_a_forbidden_import(module, name):
    assert any(_under(name, f) for f in _rule_for(module))
