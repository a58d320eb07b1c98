#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite: core, twin, node graph over real DDS,
# launch-file checks, the learning regression test and the linters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A unique DDS domain per run keeps parallel runs on one machine apart; tests pick their own too.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=600 --durations=20 test "$@"
