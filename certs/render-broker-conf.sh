#!/usr/bin/env bash
# certs/render-broker-conf.sh — render packaging/mosquitto/{tidegate.conf.in,acl.in}.
#
# Usage: certs/render-broker-conf.sh --certs CERTDIR --port PORT --dir RUNDIR
#            [--bind 127.0.0.1] [--log FILE|stderr] [--loadgen]
#            [--max-queued N] [--max-queued-bytes BYTES] [--max-packet BYTES] [--user NAME]
#            [--plugin SO --registry DB [--jitr off|inactive|active] [--wait-for-gateway]]
#            [--autosave SECONDS]
# Writes RUNDIR/mosquitto.conf and RUNDIR/acl, creates RUNDIR/persist/, and prints the path
# of mosquitto.conf. Start the broker with: mosquitto -c RUNDIR/mosquitto.conf
# CERTDIR is what certs/make-certs.sh produced (ca.crt, server.crt/key, crl.pem).
# --loadgen adds the benchmark identity tidegate-loadgen with write access to devices/# (it
# publishes for many things over a few shared connections); never use it on a real box.
# The broker runs as the current user (root when run as root), because Mosquitto would
# otherwise drop to user "mosquitto", which cannot read the 0600 keys make-certs.sh writes.
set -euo pipefail
die() { echo "${0##*/}: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
tmpl_dir=$here/../packaging/mosquitto

CERTS= PORT= DIR= BIND=127.0.0.1 LOG= LOADGEN=0 MAX_QUEUED=300000 MAX_QUEUED_BYTES=134217728 MAX_PACKET=1048576
PLUGIN= REGISTRY= JITR=off WAIT_GW=0 AUTOSAVE=
RUN_USER=$(id -un)
while [ $# -gt 0 ]; do
	case $1 in
	--certs) CERTS=${2:?}; shift 2 ;;
	--port) PORT=${2:?}; shift 2 ;;
	--dir) DIR=${2:?}; shift 2 ;;
	--bind) BIND=${2:?}; shift 2 ;;
	--log) LOG=${2:?}; shift 2 ;;
	--loadgen) LOADGEN=1; shift ;;
	--max-queued) MAX_QUEUED=${2:?}; shift 2 ;;
	--max-queued-bytes) MAX_QUEUED_BYTES=${2:?}; shift 2 ;;
	--max-packet) MAX_PACKET=${2:?}; shift 2 ;;
	--user) RUN_USER=${2:?}; shift 2 ;;
	--plugin) PLUGIN=${2:?}; shift 2 ;;
	--registry) REGISTRY=${2:?}; shift 2 ;;
	--jitr) JITR=${2:?}; shift 2 ;;
	--wait-for-gateway) WAIT_GW=1; shift ;;
	--autosave) AUTOSAVE=${2:?}; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done
[ -n "$CERTS" ] && [ -n "$PORT" ] && [ -n "$DIR" ] ||
	die "usage: render-broker-conf.sh --certs CERTDIR --port PORT --dir RUNDIR [...]"
[[ $PORT =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "bad port $PORT"
[[ $MAX_QUEUED =~ ^[0-9]+$ && $MAX_QUEUED_BYTES =~ ^[0-9]+$ && $MAX_PACKET =~ ^[0-9]+$ ]] || die "caps must be numbers"
# The tidegate config is loopback-only by default; other addresses are for a real box.
[[ $BIND =~ ^[0-9A-Za-z.:-]+$ ]] || die "bad bind address $BIND"
[ -d "$CERTS" ] || die "no such directory $CERTS"
CERTS=$(cd "$CERTS" && pwd)
for f in ca.crt server.crt server.key crl.pem; do
	[ -f "$CERTS/$f" ] || die "$CERTS/$f missing; run certs/make-certs.sh $CERTS"
done
mkdir -p "$DIR/persist"
DIR=$(cd "$DIR" && pwd)
# Mosquitto's config parser splits on whitespace; refuse paths it would misread.
for p in "$CERTS" "$DIR" "$LOG"; do
	[[ $p != *[[:space:]]* ]] || die "paths must not contain whitespace: '$p'"
done
[ -z "$LOG" ] || [ "$LOG" = stderr ] || [[ $LOG == /* ]] || LOG=$PWD/$LOG
if [ -z "$LOG" ]; then LOG_DEST="file $DIR/mosquitto.log"
elif [ "$LOG" = stderr ]; then LOG_DEST=stderr
else LOG_DEST="file $LOG"
fi
EXTRA=
if [ "$LOADGEN" = 1 ]; then
	EXTRA=$'# Benchmark load generator (rendered with --loadgen): publishes for any thing, and asks\n# for any thing\'s shadow updates and reads the answers (tests/bench/bench_shadow.c).\nuser tidegate-loadgen\ntopic write devices/#\ntopic write $aws/things/+/shadow/update\ntopic read $aws/things/+/shadow/#'
fi

render() { # render TEMPLATE OUTFILE — replace every @NAME@ placeholder, fail on leftovers
	local s
	s=$(<"$1")
	s=${s//@USER@/$RUN_USER}
	s=${s//@PORT@/$PORT}
	s=${s//@BIND@/$BIND}
	s=${s//@CA_FILE@/$CERTS/ca.crt}
	s=${s//@CERT_FILE@/$CERTS/server.crt}
	s=${s//@KEY_FILE@/$CERTS/server.key}
	s=${s//@CRL_FILE@/$CERTS/crl.pem}
	s=${s//@ACL_FILE@/$DIR/acl}
	s=${s//@PERSIST_DIR@/$DIR/persist}
	s=${s//@MAX_QUEUED@/$MAX_QUEUED}
	s=${s//@MAX_QUEUED_BYTES@/$MAX_QUEUED_BYTES}
	s=${s//@MAX_PACKET@/$MAX_PACKET}
	s=${s//@LOG_DEST@/$LOG_DEST}
	s=${s//@EXTRA@/$EXTRA}
	if [[ $s =~ @[A-Z_]+@ ]]; then die "unrendered placeholder ${BASH_REMATCH[0]} in $1"; fi
	printf '%s\n' "$s" >"$2.tmp"
	mv "$2.tmp" "$2"
}
render "$tmpl_dir/tidegate.conf.in" "$DIR/mosquitto.conf"
if [ -n "$AUTOSAVE" ]; then
	[[ $AUTOSAVE =~ ^[0-9]+$ ]] || die "bad --autosave $AUTOSAVE"
	sed -i "s/^autosave_interval .*/autosave_interval $AUTOSAVE/" "$DIR/mosquitto.conf"
fi
render "$tmpl_dir/acl.in" "$DIR/acl"
# --plugin: the registry and policies decide instead of the ACL file (docs/registry.md).
# use_identity_as_username stays off so the plugin refuses unknown certificates at CONNECT.
if [ -n "$PLUGIN" ]; then
	[ -n "$REGISTRY" ] || die "--plugin needs --registry DB"
	[[ $PLUGIN == /* ]] || PLUGIN=$PWD/$PLUGIN
	[[ $REGISTRY == /* ]] || REGISTRY=$PWD/$REGISTRY
	[ -f "$PLUGIN" ] || die "no plugin at $PLUGIN (make)"
	pol=$(cd "$tmpl_dir/policies" && pwd)
	{
		grep -v -e '^acl_file ' -e '^use_identity_as_username ' "$DIR/mosquitto.conf"
		echo "# Device registry and policies (rendered with --plugin)"
		echo "plugin $PLUGIN"
		echo "plugin_opt_registry $REGISTRY"
		echo "plugin_opt_jitr $JITR"
		echo "plugin_opt_gateway_cn tidegate-gateway"
		echo "plugin_opt_gateway_policy_file $pol/gateway-policy.json"
		echo "plugin_opt_identity_tidegate-ops $pol/ops-policy.json"
		[ "$LOADGEN" = 1 ] && echo "plugin_opt_identity_tidegate-loadgen $pol/loadgen-policy.json"
		[ "$WAIT_GW" = 1 ] && echo "plugin_opt_wait_for_gateway on"
		true
	} >"$DIR/mosquitto.conf.tmp"
	mv "$DIR/mosquitto.conf.tmp" "$DIR/mosquitto.conf"
fi
echo "$DIR/mosquitto.conf"
