#!/usr/bin/env bash
# GPU readiness in one run: the CUDA / TensorRT tests and `dposer bench` with GPU rows, written as one markdown file.
#
#   bash bench/gpu_check.sh                 # on a machine with an NVIDIA GPU, after scripts/bootstrap.sh
#   OUT=out/gpu_check BUDGET=120 bash bench/gpu_check.sh
#
# Needs torch with CUDA in the environment (scripts/bootstrap.sh installs the CPU build: on a GPU machine install
# the CUDA build of the same version first) and, for the TensorRT rows, the `tensorrt` package. What is missing is
# reported in the output, not hidden: the tests say why they skip, the bench leaves out backends it cannot build.
# Writes $OUT/gpu_check.md (machine, test summary, bench tables, few_step accuracy with the network on the GPU against
# the torch checkpoint on 4 validation clips) and $OUT/bench.json; takes under 8 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/out/gpu_check}"
BUDGET="${BUDGET:-150}"
mkdir -p "$OUT"
cd "$ROOT"
if [[ -f scripts/env.sh ]]; then
    set +u
    # shellcheck disable=SC1091
    source scripts/env.sh
    set -u
fi
REPORT="$OUT/gpu_check.md"
{
    echo "# GPU check ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo
    echo '```'
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    else
        echo "nvidia-smi: not found (no NVIDIA driver)"
    fi
    python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())'
    python -c 'import tensorrt; print("tensorrt", tensorrt.__version__)' 2>/dev/null || echo "tensorrt: not installed"
    echo '```'
    echo
    echo "## Tests that need a GPU"
    echo
    echo '```'
} >"$REPORT"
# the CUDA / TensorRT tests, the exported solve parsed by TensorRT among them (they skip with their reason where a GPU or TensorRT is missing)
{ python -m pytest -q -rs tests/test_backends.py tests/test_linear.py -k "cuda or tensorrt" 2>&1 || true; } | tail -n 15 | tee -a "$REPORT"
echo '```' >>"$REPORT"
echo >>"$REPORT"
echo "## dposer bench (one thread per CPU backend; GPU backends where they build)" >>"$REPORT"
echo >>"$REPORT"
BACKENDS="torch,onnxruntime"
if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    BACKENDS="$BACKENDS,torch-cuda"
    if python -c 'import tensorrt' 2>/dev/null; then BACKENDS="$BACKENDS,tensorrt"; fi
fi
dposer bench --backends "$BACKENDS" --persons 1,16,256 --steps 4 --formats coco17 --no-full --budget "$BUDGET" \
    --json "$OUT/bench.json" --figure "$OUT/bench.png" 2>&1 | tee -a "$REPORT"
# accuracy on the GPU backend against the torch checkpoint: the same validation streams (few_step; a few clips)
GPU_BACKEND=""
if [[ "$BACKENDS" == *tensorrt* ]]; then GPU_BACKEND=tensorrt; elif [[ "$BACKENDS" == *torch-cuda* ]]; then GPU_BACKEND=torch; fi
if [[ -n "$GPU_BACKEND" ]]; then
    {
        echo
        echo "## Accuracy: few_step with the network on $GPU_BACKEND (GPU) against the torch checkpoint (CPU), validation"
        echo
    } >>"$REPORT"
    EVAL=(--prior models/dposer_cpu/prior.pt --split val --clips 4 --frames 20 --methods few_step --quiet
          --corruptions cam_noise_2cm,cam_occl_limb,cam_occl_legs,cam_occl_random30)
    for RUN in checkpoint "$GPU_BACKEND"; do
        ARGS=("${EVAL[@]}" --out "$OUT/eval_$RUN")
        [[ "$RUN" == checkpoint ]] || ARGS+=(--backend "$RUN")
        dposer eval "${ARGS[@]}" >"$OUT/eval_$RUN.txt" 2>&1 || echo "dposer eval ($RUN) failed: see $OUT/eval_$RUN.txt" >>"$REPORT"
        grep '^|' "$OUT/eval_$RUN.txt" | head -n 6 | tee -a "$REPORT" || true
        echo >>"$REPORT"
    done
fi
# the warm frame as one ONNX graph on the GPU (ONNX Runtime's TensorRT or CUDA execution provider: onnxruntime-gpu)
PROVIDER="$(python -c 'import onnxruntime as o; p = o.get_available_providers(); print("tensorrt" if "TensorrtExecutionProvider" in p else "cuda" if "CUDAExecutionProvider" in p else "")')"
{
    echo
    echo "## The warm frame as one ONNX graph on ${PROVIDER:-no GPU provider (onnxruntime without CUDA: install onnxruntime-gpu)}"
    echo
} >>"$REPORT"
if [[ -n "$PROVIDER" ]]; then
    python bench/frame_graph_agreement.py --clips 2 --frames 30 --device "$PROVIDER" \
        --out "$OUT/frame_graph_$PROVIDER.json" 2>&1 | tail -n 7 | tee -a "$REPORT" || true
fi
echo
echo "gpu check: $REPORT"
