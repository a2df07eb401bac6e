#!/usr/bin/env bash
# Stage what benchmarks/device_burst.sh needs on a device machine, inside the repository (../shared does not
# travel), measure what would travel, and print the exact device-tool call.
#
#   bash benchmarks/device_stage.sh            # copies data + downloads 3 wheels, prints the call
#   bash benchmarks/device_stage.sh --no-wheels
#
# Writes (both ignored through .git/info/exclude, never committed):
#   .carry/artworks-mini/<style>2photo/{trainA,trainB}   all training images of the demo pairs
#   .carry/artworks-mini/<style>2photo/{testA,testB}     the first TEST_KEEP (default 8) held-out images each
#                                                        (the sample grids use 4; keeps the tree small)
#   .carry/whl/*.whl   kornia, kornia_rs and lpips for the device's Python 3.12 (KINDS.md: the device image
#                      lacks them; wct.metrics imports kornia, so the wct/ doctests and metrics tests need
#                      it). Downloaded from PyPI with the device README's recipe; skipped with --no-wheels.
# The device tool sends at most 64 MiB (tracked + untracked-not-ignored files + carried paths): the total
# is printed and checked.
#
# Environment: DATA (default ../shared/data/artworks-mini), STYLES (default "monet vangogh"), TEST_KEEP (8).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/artworks-mini}
STYLES=${STYLES:-"monet vangogh"}
TEST_KEEP=${TEST_KEEP:-8}
WHEELS=1
for a in "$@"; do
  case "$a" in
    --no-wheels) WHEELS=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    *) echo "error: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
LIMIT=$((64 * 1024 * 1024))

# 1. ignore .carry/ (git's own exclude file, also in a worktree)
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.carry/' "$exclude" 2>/dev/null || echo '/.carry/' >> "$exclude"
git check-ignore -q .carry/x || { echo "error: .carry/ is not ignored by git ($exclude)" >&2; exit 1; }

# 2. data: the demo pairs only
for s in $STYLES; do
  src="$DATA/${s}2photo"
  [ -d "$src/trainA" ] && [ -d "$src/trainB" ] || { echo "error: $src/trainA or trainB not found (DATA=$DATA)" >&2; exit 1; }
  dst=".carry/artworks-mini/${s}2photo"
  rm -rf "$dst"; mkdir -p "$dst"
  cp -r "$src/trainA" "$src/trainB" "$dst/"
  for t in testA testB; do
    mkdir -p "$dst/$t"
    if [ -d "$src/$t" ]; then
      find "$src/$t" -maxdepth 1 -type f | sort | head -n "$TEST_KEEP" | while IFS= read -r f; do cp "$f" "$dst/$t/"; done
    fi
  done
  echo "staged $dst: $(find "$dst" -type f | wc -l) images, $(du -sb "$dst" | cut -f1) bytes"
done

# 3. wheels missing on the device (Python 3.12, manylinux x86-64), one version each
if [ "$WHEELS" = 1 ]; then
  mkdir -p .carry/whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .carry/whl \
    kornia==0.9.0 kornia_rs==0.2.0 lpips==0.1.4
  echo "wheels: $(ls .carry/whl | tr '\n' ' ')"
fi

# 4. what would travel
tree=$(git ls-files -co --exclude-standard -z | xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
carry=$(du -sb .carry | cut -f1)
total=$((tree + carry))
printf 'would travel: working tree %d bytes + .carry %d bytes = %d bytes (%.1f MiB of 64 MiB)\n' \
  "$tree" "$carry" "$total" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: over the device tool's 64 MiB; use --no-wheels, TEST_KEEP=4 or fewer STYLES" >&2
  exit 1
fi

# 5. the call (device tool `run`; OUT is set there; the burst prints summary.md last)
cmd="bash benchmarks/device_burst.sh --budget 540"
cat <<EOF

Device call (one H200 session; ~1-2 min start + 540 s; leaves ~3 min of the 15 for one short rerun):
  run(command="$cmd", carry=[".carry"], timeout_s=600)
If one stage failed and the machine is still warm (30 s), rerun only that stage, e.g.:
  run(command="bash benchmarks/device_burst.sh --budget 150 --stages train", carry=[".carry"], timeout_s=180)
Then give_back(). The 8 files come back under files_at: summary.md, env.log, tests.log, bench.log, train.log,
bench.tar (eigh/generator JSON + md), monet.tar and vangogh.tar (export .safetensors + .json, last sample PNG,
summary.json, metrics tail); extract with tar -xf and follow checkpoints/README.md to score and ship.
(command: ${#cmd} characters of 2000)
EOF
