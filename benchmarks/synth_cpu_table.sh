#!/usr/bin/env bash
# The CPU figures of record for the synthesis engine (benchmarks/README.md, "Synthesis engine"): every engine option
# on and off at the paper's setting (CIFAR-10 shape, ResNet-34, batch 256), then the scaling table. Appends one JSON
# line per run to $1 (default benchmarks/synth-cpu.jsonl). Run it alone on the machine: about 45 minutes on 2 cores.
set -euo pipefail
out=${1:-benchmarks/synth-cpu.jsonl}
py=${PYTHON:-.venv/bin/python}
bench() { "$py" -m natinv bench synth --threads 2 --warmup 1 --iterations 3 "$@" | tee -a "$out" | cut -c1-160; }
for m in ni di; do
  bench --method $m                                   # the defaults
  bench --method $m --no-channels-last
  bench --method $m --no-reuse-host-memory
  bench --method $m --teacher-grads --recompute      # the official loop's extra work on our engine
  bench --method $m --teacher-grads --recompute --no-channels-last --no-reuse-host-memory
done
# no bf16 units on this CPU: one bf16 NI iteration at batch 256 took over 10 minutes; measured at batch 64 instead
bench --method ni --batch-size 64 --iterations 1 --autocast bf16
bench --method ni --batches-per-step 2 --batches 2
bench --method ni --compile
for arch in resnet18 resnet34 vgg11; do for b in 64 128 256; do
  [ "$arch/$b" = resnet34/256 ] || bench --method ni --arch $arch --batch-size $b
done; done
for n in 1 2 4; do bench --method ni --batch-size 64 --batches $n; done   # cost against image count
