#!/usr/bin/env bash
# The GPU checks of the planner (issue 15) as one run, for a lent GPU machine: the CUDA tests,
# the latency of every planner backend (eager reference, fused, compiled, CUDA graph) at the cpu,
# mid and lecture sizes, the TF32/bf16 precision check and, if the ROS 2 wheels import there, the
# lecture's recipe through the node graph with the captured planner. Everything lands in $OUT
# (default runs/gpu): JSON lines, logs, nvidia-smi. Never run two of these at once.
#
# Usage: scripts/gpu_check.sh [python]   (default: .venv/bin/python if it sees a GPU, else
# python3; that interpreter needs torch with CUDA and the packages of requirements.txt)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
py=${1:-}
if [ -z "$py" ]; then
  py=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    py=.venv/bin/python
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
if ! "$py" -c 'import torch, sys; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0)); sys.exit(not torch.cuda.is_available())' > "$out/torch.txt" 2>&1; then
  echo "gpu_check: $py has no CUDA torch ($(cat "$out/torch.txt" | tail -1))"
  exit 1
fi
echo "gpu_check: $(cat "$out/torch.txt")"

step() {  # step NAME SECONDS COMMAND...: run one check with a time limit, say how it ended
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  echo "gpu_check: $name rc=$? in $((SECONDS - t0)) s"
}

step tests 240 "$py" -m pytest -q -p no:cacheprovider test/core/test_fused_planner.py \
  test/core/test_planning.py
step plan_latency 420 "$py" benchmarks/plan_latency.py --device cuda \
  --configs cpu,mid,lecture,lecture_mean \
  --variants reference,fused,compiled,cuda_graph,compiled_cuda_graph,floor --repeats 100 \
  --max-seconds 20
step plan_latency_bf16 300 "$py" benchmarks/plan_latency.py --device cuda \
  --configs mid,lecture --variants cuda_graph,cuda_graph@bf16,compiled_cuda_graph,\
compiled_cuda_graph@bf16,floor,floor@bf16 --repeats 100 --max-seconds 20
if "$py" -c 'import rclpy' 2> /dev/null; then
  # The lecture's recipe through the graph, the planner captured once and replayed each tick.
  step lecture_recipe 900 "$py" -m mbrl_robot.runner --profile lecture --run-dir "$out/lecture" \
    --set controller.planner.backend=cuda_graph --timeout 880
  for precision in tf32 bf16; do
    step "precision_$precision" 120 "$py" benchmarks/plan_latency.py --device cuda \
      --precision-check "$out/lecture" --profile lecture --precision "$precision" --states 50
  done
else
  echo "gpu_check: rclpy does not import with $py: no recipe through the graph, no precision check"
fi
