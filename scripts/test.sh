#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite: core, twin, node graph over real DDS,
# launch-file checks, the learning regression test and the linters.
#
# Two passes. Everything outside test/nodes (no DDS, no timers, no deadlines) runs on two pytest
# workers (pytest-xdist): its longest tests train on one torch thread, so one core sat idle.
# test/nodes then runs alone, one test at a time: its node graphs keep real-time deadlines and
# are timed for a machine that runs nothing else. With arguments (a file, -k, ...) the suite
# runs as one plain pytest call with them.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
# A unique DDS domain per run keeps parallel runs on one machine apart; tests pick their own too.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=600 --durations=10)
if [ $# -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
"${pytest[@]}" -n 2 --dist worksteal --ignore=test/nodes test
first=$?
"${pytest[@]}" test/nodes
second=$?
if [ $first -ne 0 ] || [ $second -ne 0 ]; then
  echo "test.sh: FAILED (outside test/nodes: exit $first; test/nodes: exit $second)" >&2
  exit 1
fi
