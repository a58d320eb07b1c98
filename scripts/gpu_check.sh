#!/usr/bin/env bash
# The GPU checks of the planner (issue 15), sized for a lent GPU machine: 15 minutes of device
# time a session, the machine's start (minutes) included, at most 10 minutes a command. Three
# calls, in this order of priority; `bench` fits a session with its start, the other two take
# what is left or a later session:
#   bench (default; steps at most 8.4 min): the CUDA tests; every planner backend at the mid
#     size (eager reference, fused, compiled with and without the bias split, CUDA graphs); at
#     the lecture size the backends that need no compile (reference, fused, cuda_graph, and
#     cuda_graph_hostdraw: the draws outside the graph), fp32 beside bf16, then TF32 (a run of
#     its own: TF32 is process-wide), then the host's launches per plan (--count-ops).
#   compiled (at most 8 min): the lecture size compiled and captured (compiled_cuda_graph), fp32
#     and bf16: two cold compiles, each its own step.
#   recipe (at most 7 min): the lecture's recipe through the node graph with the captured
#     planner for 310 s (the whole recipe's episodes alone take ~9 min at 20 Hz: a partial run,
#     which gives the capture, the plan latency and the deadline misses through the graph; a
#     success rate only if it finishes), then the TF32/bf16 precision check on its recorded
#     states (needs rclpy on that python).
# Each step has its own limit and output files, so a step cut off loses only its own rows.
# Everything lands in $OUT (default runs/gpu): JSON lines, logs, nvidia-smi. Never run two of
# these at once.
#
# Usage: scripts/gpu_check.sh [bench|compiled|recipe] [python]   (the mode comes first; default
# python: .venv/bin/python if it sees a GPU, else python3; that interpreter needs torch with
# CUDA and the packages of requirements.txt)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
mode=${1:-bench}
case $mode in bench|compiled|recipe) ;; *) echo "gpu_check: mode must be bench, compiled or recipe, got $mode" >&2; exit 2;; esac
py=${2:-}
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
  timeout -k 10 "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  echo "gpu_check: $name rc=$? in $((SECONDS - t0)) s"
}

if [ "$mode" = bench ]; then
  step tests 120 "$py" -m pytest -q -p no:cacheprovider test/core/test_fused_planner.py \
    test/core/test_planning.py test/core/test_plan_latency_bench.py
  step plan_latency_mid 180 "$py" benchmarks/plan_latency.py --device cuda --configs mid \
    --variants reference,fused,compiled,compiled_baddbmm,cuda_graph,compiled_cuda_graph,floor \
    --repeats 100 --max-seconds 10
  step plan_latency_lecture 100 "$py" benchmarks/plan_latency.py --device cuda --configs lecture \
    --variants reference,fused,cuda_graph,cuda_graph_hostdraw,cuda_graph@bf16,floor,floor@bf16 \
    --repeats 100 --max-seconds 10
  step plan_latency_lecture_tf32 60 "$py" benchmarks/plan_latency.py --device cuda --tf32 \
    --configs lecture --variants cuda_graph,floor --repeats 100 --max-seconds 10
  step count_ops_lecture 45 "$py" benchmarks/plan_latency.py --device cuda --count-ops \
    --configs lecture
  exit 0
fi
if [ "$mode" = compiled ]; then
  for precision in fp32 bf16; do
    v=compiled_cuda_graph
    [ "$precision" = bf16 ] && v=compiled_cuda_graph@bf16
    step "plan_latency_lecture_compiled_$precision" 230 "$py" benchmarks/plan_latency.py \
      --device cuda --configs lecture --variants "$v,cuda_graph,floor" --repeats 100 \
      --max-seconds 10
  done
  exit 0
fi
if ! "$py" -c 'import rclpy' 2> /dev/null; then
  echo "gpu_check: rclpy does not import with $py: no recipe through the graph, no precision check"
  exit 1
fi
# The lecture's recipe through the graph, the planner captured once and replayed each tick.
step lecture_recipe 330 "$py" -m mbrl_robot.runner --profile lecture --run-dir "$out/lecture" \
  --set controller.planner.backend=cuda_graph --timeout 310
for precision in tf32 bf16; do
  step "precision_$precision" 45 "$py" benchmarks/plan_latency.py --device cuda \
    --precision-check "$out/lecture" --profile lecture --precision "$precision" --states 50
done
