#!/usr/bin/env bash
# Prepared GPU check of issue 14 (short: a few minutes on one GPU).
#   1. the CUDA tests (they skip cleanly without a device);
#   2. GKD/GKL on cuda vs cpu, float32 and float64 -> benchmarks/results/gkd_vs_peers_cuda.json;
#   3. the [S24] mu (preconditioned matrix-free route), medium and large -> .../ntk_matrix_free_cuda.json
# Usage (repository root): PY=/path/to/python bash benchmarks/gpu_check.sh
set -euo pipefail
PY=${PY:-python}
nvidia-smi -L || true
OMP_NUM_THREADS=4 "$PY" -m pytest -q -p no:cacheprovider tests/spectral -k "cuda" -rs 2>&1 | tail -15
OMP_NUM_THREADS=4 timeout 420 "$PY" benchmarks/gpu_check.py "$@"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gkd_vs_peers_cuda.json benchmarks/results/ntk_matrix_free_cuda.json "$OUT/"; fi
