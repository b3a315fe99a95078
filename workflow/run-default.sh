#!/usr/bin/env bash
# The default pipeline (params/default.yaml) stage by stage through the CLI, two shard jobs at a time.
# Usage: bash workflow/run-default.sh [extra params overlay ...]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(params/default.yaml "$@")
PARAMS=()
for f in "${FILES[@]}"; do PARAMS+=(--params "$f"); done
natinv() { .venv/bin/python -m natinv "$@"; }
# the stage keys, one line each: teachers, methods, shards, students, KD data sources
{ read -r TEACHERS; read -r METHODS; read -r SHARDS; read -r STUDENTS; read -r KD_METHODS; } < <(.venv/bin/python -c '
import sys
from natinv.config import load_config
from natinv.errors import NatinvError
try:
    c = load_config(sys.argv[1:])
except NatinvError as exc:
    sys.exit(f"run-default: error: {exc}")
for keys in (c.teacher_keys(), c.synthesis.run, range(c.synthesis.shards), c.kd.students, c.kd.methods):
    print(" ".join(map(str, keys)))' "${FILES[@]}")

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
