#!/usr/bin/env bash
# Sets up .venv and runs the pushing recipe on the PyBullet twin through the ROS 2 node graph.
# Usage: scripts/run_recipe.sh [profile] [extra mbrl_run args]; the default profile fits 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
profile=${1:-cpu}
shift || true
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
exec .venv/bin/mbrl_run --profile "$profile" "$@"
