#!/usr/bin/env bash
# Replay of a synthetic recording with the learned gate on the CPU and on the GPU (issue 17), on a
# lent GPU machine after .ci/gpu_gate_check.sh. Packages the device image lacks (pyzmq for
# Python 3.12, filterpy, mcap: pure Python or abi3 wheels) are carried unpacked in
# .devcarry/site. Writes $OUT/replay_cpu.json, $OUT/replay_cuda.json, $OUT/pipeline.log.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python3 || command -v python)}
if "$PY" -c "import zmq, filterpy, mcap" 2>/dev/null; then  # what this Python lacks comes from the carry
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/.devcarry/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
REC=$(mktemp -d)/rec
{
  timeout 60 "$PY" -m tracker3d.cli sim --out "$REC" --seconds "${SECONDS_SIM:-20}" --seed 1 || echo "sim failed rc=$?"
  for dev in cpu cuda; do
    for rep in 1 2; do
      CUDA_VISIBLE_DEVICES=0 timeout 60 "$PY" -m tracker3d.cli replay "$REC" --fast --gate persistence --gate-device "$dev" \
        --summary-json "$OUT/replay_${dev}.json" 2>&1 | grep -E "pairs/s|latency|gate|Error|error" | head -8
      echo "replay $dev rep $rep rc=${PIPESTATUS[0]}"
    done
  done
} > "$OUT/pipeline.log" 2>&1
cat "$OUT/pipeline.log"
exit 0
