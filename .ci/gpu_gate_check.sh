#!/usr/bin/env bash
# The learned gate's device check (issue 17): run once on a lent GPU machine, from the repo root.
#   OUT=/some/dir .ci/gpu_gate_check.sh        (on the device tool, $OUT is set for you)
# Writes to $OUT: env.txt, pytest.log, bench.log, gate_gpu_last.json. Each part fails on its
# own (the script goes on and exits 0); about 7 minutes at most. A dry run on a CPU:
#   OUT=/tmp/x GATE_QUICK=1 REPS=1 .ci/gpu_gate_check.sh
# "Before" is commit e03a8b9's gate, from `git archive` when .git is here, else from
# .devcarry/before (made beforehand: mkdir -p .devcarry/before && git archive e03a8b9 persistence
# tracker3d/__init__.py tracker3d/bench | tar -x -C .devcarry/before; carry .devcarry).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
BEFORE_REV=${BEFORE_REV:-e03a8b9}

{
  date -u
  nvidia-smi -L || echo "nvidia-smi failed"
  "$PY" -c "import sys, torch, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0), 'numpy', numpy.__version__)" \
    || echo "python/torch check failed"
  git log -1 --oneline 2>/dev/null || echo "no git history here"
} 2>&1 | tee "$OUT/env.txt"

if ! "$PY" -c "import persistence.filter, tracker3d.bench.gate_device" 2>/dev/null; then
  echo "package not importable from the repo root: pip install -e . --no-deps" | tee -a "$OUT/env.txt"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 | tee -a "$OUT/env.txt"
fi

DIR=$(mktemp -d)
if git archive "$BEFORE_REV" persistence tracker3d/__init__.py tracker3d/bench 2>/dev/null | tar -x -C "$DIR" 2>/dev/null \
    && [ -d "$DIR/persistence" ]; then
  echo "before: $BEFORE_REV (git archive)" | tee -a "$OUT/env.txt"
elif [ -d .devcarry/before/persistence ]; then
  cp -r .devcarry/before/. "$DIR/"
  echo "before: .devcarry/before" | tee -a "$OUT/env.txt"
else
  echo "before: not available (no git history, no .devcarry/before): now only" | tee -a "$OUT/env.txt"
  DIR=""
fi

# tests/conftest.py hides GPUs unless CUDA_VISIBLE_DEVICES is set: the GPU tests run here.
CUDA_VISIBLE_DEVICES=0 timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_persistence_steppers.py \
  > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?" | tee -a "$OUT/env.txt"
tail -5 "$OUT/pytest.log"

CUDA_VISIBLE_DEVICES=0 timeout 300 "$PY" -m tracker3d.bench.gate_device --out "$OUT" ${DIR:+--before "$DIR"} --reps "${REPS:-3}" ${GATE_QUICK:+--quick} \
  > "$OUT/bench.log" 2>&1
echo "bench rc=$? (124: stopped at 300 s; gate_gpu_last.json holds the parts done)" | tee -a "$OUT/env.txt"
grep -v '^USDT' "$OUT/bench.log" | tail -60
exit 0
