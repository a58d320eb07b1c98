#!/usr/bin/env bash
# Sets up .venv and runs the pushing recipe on the PyBullet twin through the ROS 2 node graph.
# Usage: scripts/run_recipe.sh [profile] [extra mbrl_run args]; the default, twin_realistic, is
# the cpu-sized recipe on the realistic realtime twin (2 CPU cores); lecture is
# lecture_realtime.yaml where CUDA is available.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
profile=${1:-twin_realistic}
shift || true
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
if [ "$profile" = lecture ]; then
  # The full-size planner runs in real time only where a GPU plans it (lecture_realtime.yaml).
  if .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
      2> /dev/null; then
    profile=lecture_realtime
    echo "run_recipe.sh: CUDA found: the lecture's recipe in real time" \
      "(config/lecture_realtime.yaml; the lockstep one: .venv/bin/mbrl_run --profile lecture)"
  else
    echo "run_recipe.sh: no CUDA: the lecture's recipe on the lockstep twin, which waits for" \
      "each plan (seconds on a CPU); on a GPU it runs in real time (lecture_realtime.yaml)"
  fi
fi
exec .venv/bin/mbrl_run --profile "$profile" "$@"
