#!/usr/bin/env bash
# make valgrind: the daemon (optimised build, no sanitizers) under memcheck through a few
# integration tests; any memcheck error or definite leak makes the daemon exit 97 and the
# test fail.
set -euo pipefail
build=$(cd "$1" && pwd)
TIDEGATE_BUILD=$build TIDEGATE_VALGRIND=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
  tests/integration/test_first_slice.py -k "malformed or refused or cross_device"
