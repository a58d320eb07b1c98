#!/usr/bin/env bash
# Packs what the node graph needs on a lent GPU machine and that machine's image lacks, into
# .gpu_carry/ (ignored by git), for `scripts/gpu_check.sh graph` and `recipe`. Run it here, on a
# machine with the network and the project's .venv (bash scripts/setup.sh), before the device
# session; the device tool's `carry` then takes .gpu_carry along (a call may carry 64 MiB in all).
#
# The lent machines (the device tool's KINDS.md) run CPython 3.12 with CUDA PyTorch and reach no
# network; they have no ROS 2, no gymnasium and no PyBullet. So:
# - wheels/: the ROS 2 wheels for CPython 3.12 (the closure of requirements.txt's ros-* pins, as
#   the project's venv resolved it; empy and lark-parser only generate message code), gymnasium
#   and Farama-Notifications (~45 MB);
# - pybullet-src.tar.xz: PyBullet has no wheel for CPython 3.12 and its source is 80 MB, so its
#   source without the gym data (which the twin never loads: it has its own URDFs), ~3 MB, built
#   there by `gpu_check.sh graph` (all cores);
# - pybullet<EXT_SUFFIX>.xz (e.g. pybullet.cpython-312-x86_64-linux-gnu.so.xz), if a
#   `gpu_check.sh graph` run brought one back in its bundle: that build, stripped, so a later
#   session skips the build (gpu_check uses it only if it imports there). Put it here by hand.
# Usage: scripts/gpu_carry.sh [python version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
dest=.gpu_carry
[ -x .venv/bin/python ] || { echo "gpu_carry: no .venv: run bash scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$dest"
rm -rf "$dest/wheels" "$dest/pybullet-src.tar.xz"
mkdir -p "$dest/wheels"
.venv/bin/python -m pip freeze 2>/dev/null \
  | grep -i -E '^(ros-[a-z0-9-]+|gymnasium|farama-notifications)==' > "$dest/requirements.txt"
platforms=()
for n in 17 27 28 31 34 35 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d "$dest/wheels" \
  -r "$dest/requirements.txt"
pybullet=$(grep -i '^pybullet==' requirements.txt | cut -d= -f3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "pybullet==$pybullet"
tar -xzf "$tmp/pybullet-$pybullet.tar.gz" -C "$tmp"
src="$tmp/pybullet-$pybullet"
keep="$tmp/keep/pybullet-src"
mkdir -p "$keep/examples/pybullet/gym/pybullet_data"
(cd "$src" && tar -cf - --exclude='examples/pybullet/gym' setup.py setup.cfg PKG-INFO \
  LICENSE.txt README.md src Extras examples) | tar -xf - -C "$keep"
cp "$src/examples/pybullet/gym/pybullet_data/__init__.py" "$keep/examples/pybullet/gym/pybullet_data/"
tar -cJf "$dest/pybullet-src.tar.xz" -C "$tmp/keep" pybullet-src
echo "gpu_carry: $(ls "$dest/wheels" | wc -l) wheels, pybullet $pybullet source; $(du -sh "$dest" | cut -f1) in $dest"
