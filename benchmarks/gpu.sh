#!/usr/bin/env bash
# The GPU measurement, one command per stage (each fits the device tool's 10-minute limit):
#
#   bash benchmarks/gpu.sh quick      # FIRST on a new GPU (under 8 minutes): CUDA tests, the checks that
#                                     # must hold (benchmarks/gpu_checks.py), frames/s at 180x320 and
#                                     # 540x960, and the dated results file
#   bash benchmarks/gpu.sh tests      # CUDA tests and every Triton kernel compiled for real
#   bash benchmarks/gpu.sh model      # the model matrix at 180x320 and 540x960, per-stage times
#   bash benchmarks/gpu.sh pipeline   # the whole upscale pipeline, encoders at 720p and 4K, report
#   bash benchmarks/gpu.sh all        # the three in a row (about 20 minutes)
#   bash benchmarks/gpu.sh dry        # every stage at toy sizes on the CPU: checks the script
#
# Results: JSON per stage in benchmarks/gpu-run/ (ignored by git; kept between calls on a warm
# machine), and after `pipeline` the report benchmarks/YYYY-MM-DD-<gpu>.md. Both are copied to
# $OUT when it is set (the device tool's return folder). benchmarks/README.md says how to run it.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:-all}"
runs=benchmarks/gpu-run
mkdir -p "$runs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# What the GPU machine lacks (PyAV) travels as wheels in .whl/ (benchmarks/README.md).
if ! python3 -c "import av" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        echo "PyAV is missing and .whl/ holds no wheels: see benchmarks/README.md" >&2
        exit 1
    fi
fi

bench() {  # bench NAME ARGS...: one `vsrpp bench` run as JSON, its log beside it
    local name=$1
    shift
    echo "== bench $name: $*"
    python3 -m vsrpp_cli bench "$@" --json >"$runs/$name.json" 2>"$runs/$name.log" || {
        echo "bench $name failed:"
        tail -5 "$runs/$name.log"
    }
}

keep() {  # copy results to the device tool's return folder
    if [ -n "${OUT:-}" ]; then cp "$@" "$OUT"/ 2>/dev/null || true; fi
}

run_tests() {
    python3 - <<'PY' | tee "$runs/machine.txt"
import platform, torch
print("gpu:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("torch:", torch.__version__, "cuda:", torch.version.cuda, "python:", platform.python_version())
try:
    import triton; print("triton:", triton.__version__)
except ImportError:
    print("triton: missing")
import av; print("pyav:", av.__version__, "ffmpeg:", av.ffmpeg_version_info if hasattr(av, "ffmpeg_version_info") else "?")
PY
    # CUDA-marked tests everywhere, and the Triton kernel tests, which compile for real on a GPU.
    python3 -m pytest -q -p no:cacheprovider -m cuda tests/ 2>&1 | tee "$runs/tests-cuda.log"
    python3 -m pytest -q -p no:cacheprovider tests/test_deform_conv.py -k "triton or probe" 2>&1 \
        | tee "$runs/tests-triton.log"
    keep "$runs/machine.txt" "$runs/tests-cuda.log" "$runs/tests-triton.log"
}

run_model() {
    local s=$1 large=$2 frames=$3 large_frames=$4 device=$5
    bench model-small --size "$s" --frames "$frames" --device "$device" --precision fp16 --precision bf16 \
        --backend triton --backend torchvision --backend torch --graphs both --no-pipeline
    bench batch-small --size "$s" --frames "$frames" --device "$device" --precision fp16 --backend auto \
        --batch 1 --batch 2 --batch 4 --no-baseline --no-pipeline --stages --graphs both
    bench model-large --size "$large" --frames "$large_frames" --device "$device" --precision fp16 \
        --precision bf16 --backend triton --backend torchvision --graphs both --no-pipeline --stages
    keep "$runs"/model-*.json "$runs"/batch-*.json
}

run_pipeline() {
    local s=$1 large=$2 frames=$3 large_frames=$4 device=$5
    bench pipeline-small --size "$s" --frames "$frames" --device "$device" --precision fp16 \
        --no-baseline --repeat 1 --encoders libx264 --encoders h264_nvenc --encoders hevc_nvenc
    bench pipeline-large --size "$large" --frames "$large_frames" --device "$device" --precision fp16 \
        --no-baseline --repeat 1
    python3 benchmarks/report.py "$runs" >"$runs/report.md" || exit 1
    local name
    name="benchmarks/$(date +%F)-$(python3 benchmarks/report.py --gpu-slug "$runs").md"
    cp "$runs/report.md" "$name"
    echo "wrote $name"
    keep "$runs"/pipeline-*.json "$name"
}

run_quick() {
    local device=$1 small=$2 large=$3 frames=$4 precision=$5
    python3 benchmarks/gpu_checks.py "$runs" --device "$device" $( [ "$device" = cpu ] && echo --size 32x32 --frames 4 ) \
        2>&1 | tee "$runs/checks.log"
    local checks=${PIPESTATUS[0]}
    bench quick-small --size "$small" --frames "$frames" --device "$device" --precision "$precision" \
        --no-baseline --no-pipeline --repeat 1
    bench quick-large --size "$large" --frames 4 --device "$device" --precision "$precision" \
        --no-baseline --no-pipeline --repeat 1
    local name
    name="benchmarks/$(date +%F)-quick-$(python3 benchmarks/report.py --gpu-slug "$runs").md"
    {
        echo "# $(date +%F): benchmarks/gpu.sh quick"
        echo
        echo '```'
        cat "$runs/machine.txt" 2>/dev/null
        cat "$runs/gpu-checks.jsonl"
        tail -3 "$runs/tests-cuda.log" 2>/dev/null
        echo '```'
        echo
        python3 benchmarks/report.py "$runs"
    } >"$runs/quick.md"
    [ "$device" = cpu ] || cp "$runs/quick.md" "$name"
    echo "wrote $runs/quick.md (checks: exit $checks)"
    keep "$runs"/quick-*.json "$runs/gpu-checks.jsonl" "$runs/quick.md" "$name"
    return "$checks"
}

case "$stage" in
    quick)
        run_tests
        run_quick cuda 180x320 540x960 30 fp16
        ;;
    tests) run_tests ;;
    model) run_model 180x320 540x960 30 16 cuda ;;
    pipeline) run_pipeline 180x320 540x960 30 8 cuda ;;
    all)
        run_tests
        run_model 180x320 540x960 30 16 cuda
        run_pipeline 180x320 540x960 30 8 cuda
        ;;
    dry)  # the script end to end on the CPU, at toy sizes (no CUDA: graphs and Triton rows drop out)
        runs=benchmarks/gpu-run-dry
        mkdir -p "$runs"
        bench model-small --size 32x32 --frames 3 --device cpu --precision bf16 --backend torch \
            --no-pipeline --repeat 1 --stages --batch 1 --batch 2
        bench pipeline-small --size 32x32 --frames 3 --device cpu --precision bf16 --no-baseline \
            --repeat 1 --encoders libx264 --encoders h264_nvenc
        python3 benchmarks/report.py "$runs" >"$runs/report.md" && echo "wrote $runs/report.md"
        run_quick cpu 32x32 32x32 3 bf16
        ;;
    *)
        echo "usage: benchmarks/gpu.sh [quick|tests|model|pipeline|all|dry]" >&2
        exit 2
        ;;
esac
