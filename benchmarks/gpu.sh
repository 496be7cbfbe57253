#!/usr/bin/env bash
# The training-throughput sweep on one CUDA device: B in {64, 256, 1024}, K in {1, 4, 16}, D in {8, 16, 32},
# pyroseq's DSSM against the plain-PyTorch reference and the teacher-forced GRU, one JSON line per
# configuration on stdout (and all rows in $OUT/gpu.json when $OUT is set). Sized to finish in under
# 8 minutes: 27 configurations x 3 candidates x (2 warm-up + 2 rounds x 5 steps).
#
# The lent GPU machine has torch but not Pyro or symspellpy. Prepare the wheels here, from the project root:
#   bash /work/shared/tools/device-wheels.sh symspellpy editdistpy
# then run there (carry ".whl"):
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('#', torch.cuda.get_device_name())" >&2
exec timeout 470 python3 benchmarks/train_throughput.py --device cuda --threads 1 \
  --batch-size 64 256 1024 --particles 1 4 16 --state-dim 8 16 32 \
  --warmup 2 --rounds 2 --steps 5 --jsonl ${OUT:+--out "$OUT/gpu.json" --plot "$OUT/gpu.png"}
