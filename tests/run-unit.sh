#!/usr/bin/env bash
# Run every cmocka unit-test binary given; print one closing line "N passed, N failed".
# TEST_WRAPPER runs each through a launcher, e.g. "qemu-aarch64-static -L /" for a
# cross-built tree (tests/packaging/test_arm64.py).
set -u
pass=0; fail=0; failed=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "$@"; do
  out=$(${TEST_WRAPPER:-} "$t" 2>&1); rc=$?
  n=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  pass=$((pass + ${n:-0})); fail=$((fail + ${f:-0}))
  if [ $rc -ne 0 ]; then
    [ -z "$f" ] && fail=$((fail + 1))
    failed+=("$t"); printf '%s\n' "$out" | tail -40
  fi
  printf 'unit %-40s %s passed %s failed rc=%d\n' "$(basename "$t")" "${n:-0}" "${f:-0}" "$rc"
done
echo "unit: $pass passed, $fail failed"
[ ${#failed[@]} -eq 0 ]
