#!/usr/bin/env bash
# Sets up .venv and runs the pushing recipe on the PyBullet twin through the ROS 2 node graph.
# Usage: scripts/run_recipe.sh [profile] [extra mbrl_run args]; the default, twin_realistic, is
# the cpu-sized recipe on the realistic realtime twin (2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
profile=${1:-twin_realistic}
shift || true
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
exec .venv/bin/mbrl_run --profile "$profile" "$@"
