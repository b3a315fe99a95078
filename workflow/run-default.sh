#!/usr/bin/env bash
# The default pipeline (params/default.yaml) stage by stage through the CLI, two shard jobs at a time.
# Usage: bash workflow/run-default.sh [extra params overlay ...]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(params/default.yaml "$@")
PARAMS=()
for f in "${FILES[@]}"; do PARAMS+=(--params "$f"); done
natinv() { .venv/bin/python -m natinv "$@"; }
keys() { .venv/bin/python -c "import sys; from natinv.config import load_config; c = load_config(sys.argv[1:]); print(' '.join(map(str, $1)))" "${FILES[@]}"; }
TEACHERS=$(keys "c.teacher_keys()")
METHODS=$(keys "c.synthesis.run")
SHARDS=$(keys "range(c.synthesis.shards)")
STUDENTS=$(keys "c.kd.students")
KD_METHODS=$(keys "c.kd.methods")

natinv data "${PARAMS[@]}"
for t in $TEACHERS; do natinv teacher "${PARAMS[@]}" --teacher "$t"; done
for t in $TEACHERS; do
  for m in $METHODS; do
    for s in $SHARDS; do
      natinv synthesize "${PARAMS[@]}" --threads 1 --teacher "$t" --method "$m" --shard "$s" &
      if (( $(jobs -rp | wc -l) >= 2 )); then wait -n; fi
    done
  done
done
for pid in $(jobs -p); do wait "$pid"; done
for t in $TEACHERS; do
  for m in $KD_METHODS; do
    for s in $STUDENTS; do natinv kd "${PARAMS[@]}" --teacher "$t" --method "$m" --student "$s"; done
  done
done
.venv/bin/python -m natinv summary "${PARAMS[@]}"
