#!/usr/bin/env bash
# Replay each fuzz target's corpus (tests/fuzz/corpus/<target>/*) through the ASan build.
set -u
dir=$1; rc=0; n=0
for t in "$dir"/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t"); corpus=tests/fuzz/corpus/${name#fuzz_}
  [ -d "$corpus" ] || continue
  if "$t" "$corpus"/* >/dev/null 2>"/tmp/fuzz-$name.log"; then n=$((n+1)); else rc=1; tail -20 "/tmp/fuzz-$name.log"; fi
done
echo "fuzz-replay: $n targets replayed"
exit $rc
