#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, builds tests/package against it as another
# project would (find_package(loom)), and runs one request through the result.
#   test_package.sh BUILD_DIR SOURCE_DIR MODEL
set -euo pipefail
build=$1 src=$2 model=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/package" -B "$work/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
out=$("$work/consumer/consumer" "$model")
echo "$out"
grep -q '^plan: ' <<<"$out"
grep -q '^output ' <<<"$out"
