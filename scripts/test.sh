#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite: core, twin, node graph over real DDS,
# launch-file checks, the learning regression test and the linters.
#
# Two passes. The tests outside test/nodes and test/launch (no node graph, no deadlines) run on
# two pytest-xdist workers, a test file per worker at a time: the longest of them train on one
# torch thread, so one core sat idle. test/nodes (and test/launch, where ROS 2 launch is
# installed) then runs alone, one test at a time: its node graphs keep real-time deadlines and
# are timed for a machine that runs nothing else. With arguments (a file, -k, ...) the suite
# runs as one plain pytest call with them.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
bash scripts/setup.sh || exit
# A unique DDS domain per run keeps parallel runs on one machine apart; tests pick their own too.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=600 --durations=10)
if [ $# -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
trap 'echo "test.sh: interrupted" >&2; exit 130' INT
"${pytest[@]}" -n 2 --dist loadfile --ignore=test/nodes --ignore=test/launch test
first=$?
"${pytest[@]}" test/nodes test/launch
second=$?
if [ $first -ne 0 ] || [ $second -ne 0 ]; then
  echo "test.sh: FAILED (pytest's exit status: $first without the node graphs, $second with" \
       "them)" >&2
  exit $(( first ? first : second ))
fi
