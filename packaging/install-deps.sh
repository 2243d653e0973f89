#!/usr/bin/env bash
# Install what tidegate needs to build, test and demo on Debian 12, and nothing when all
# of it is present already (so `make demo` / `make check` can call it every time).
set -euo pipefail

PKGS=(
  build-essential pkg-config
  libmosquitto-dev mosquitto mosquitto-clients mosquitto-dev
  libssl-dev openssl libjansson-dev libsqlite3-dev sqlite3 libpcre2-dev
  libcurl4-openssl-dev zlib1g-dev libmicrohttpd-dev libcmocka-dev
  nats-server libnats-dev
  python3 python3-pytest python3-paho-mqtt python3-boto3 awscli curl
  nodejs npm valgrind gnuplot-nox
  chromium
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs/npm may come from elsewhere (a newer node already on PATH is fine)
if command -v node >/dev/null && command -v npm >/dev/null; then
  keep=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || keep+=("$p"); done
  missing=("${keep[@]}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine (parallel builds, unattended upgrades) holds the locks for
# a while: wait for it rather than fail.
LOCK=(-o DPkg::Lock::Timeout=600)
$SUDO apt-get "${LOCK[@]}" update -qq
$SUDO apt-get "${LOCK[@]}" install -y -qq --no-install-recommends "${missing[@]}"
