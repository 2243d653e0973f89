#!/usr/bin/env bash
# Install what tidegate needs to build, test and demo on Debian 12, and nothing when all
# of it is present already (so `make demo` / `make check` can call it every time).
#
#   packaging/install-deps.sh              build, unit/integration tests, demo
#   packaging/install-deps.sh --packaging  also what `make deb` and the package tests need:
#                                          lintian, mmdebstrap (clean Debian roots)
#   packaging/install-deps.sh --arm64      also the arm64 cross-build: Debian's cross gcc,
#                                          the arm64 architecture with the multiarch -dev
#                                          packages, qemu-user to run what it builds
# The flags combine; TIDEGATE_DEPS="packaging arm64" in the environment means the same.
set -euo pipefail

want_packaging=0 want_arm64=0
for a in "$@" ${TIDEGATE_DEPS:-}; do
  case "${a#--}" in
    packaging) want_packaging=1 ;;
    arm64) want_arm64=1 ;;
    *) echo "install-deps: unknown option '$a' (--packaging, --arm64)" >&2; exit 2 ;;
  esac
done

PKGS=(
  build-essential pkg-config
  libmosquitto-dev mosquitto mosquitto-clients mosquitto-dev
  libssl-dev openssl libjansson-dev libsqlite3-dev sqlite3 libpcre2-dev
  libcurl4-openssl-dev zlib1g-dev libmicrohttpd-dev libcmocka-dev libsystemd-dev
  nats-server libnats-dev
  python3 python3-pytest python3-paho-mqtt python3-boto3 awscli curl
  nodejs npm valgrind gnuplot-nox
  chromium
  libfaketime
)
# The -dev packages the build links against (one list for both architectures, so the
# cross-build cannot miss one the native build has).
LIB_DEV=(
  libmosquitto-dev libssl-dev libjansson-dev libsqlite3-dev libpcre2-dev
  libcurl4-openssl-dev zlib1g-dev libmicrohttpd-dev libcmocka-dev libsystemd-dev
)
if [ $want_packaging -eq 1 ]; then
  # dpkg-dev: dpkg-shlibdeps/dpkg-gencontrol/dpkg-buildflags; systemd: systemd-analyze
  PKGS+=(dpkg-dev fakeroot lintian mmdebstrap systemd man-db)
fi
if [ $want_arm64 -eq 1 ]; then
  PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
  for p in "${LIB_DEV[@]}"; do PKGS+=("$p:arm64"); done
fi

SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

added_arch=0
if [ $want_arm64 -eq 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "install-deps: adding the arm64 architecture (multiarch)"
  $SUDO dpkg --add-architecture arm64
  added_arch=1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs/npm may come from elsewhere (a newer node already on PATH is fine)
if command -v node >/dev/null && command -v npm >/dev/null; then
  keep=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || keep+=("$p"); done
  missing=("${keep[@]}")
fi
[ ${#missing[@]} -eq 0 ] && [ $added_arch -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
# Another apt run on the machine (parallel builds, unattended upgrades) holds the locks for
# a while: wait for it rather than fail.
LOCK=(-o DPkg::Lock::Timeout=600)
$SUDO apt-get "${LOCK[@]}" update -qq
[ ${#missing[@]} -eq 0 ] && exit 0
$SUDO apt-get "${LOCK[@]}" install -y -qq --no-install-recommends "${missing[@]}"
