#!/usr/bin/env bash
# certs/revoke.sh — revoke a device's certificate and regenerate OUTDIR/crl.pem.
#
# Usage: certs/revoke.sh OUTDIR THING
# Revokes OUTDIR/things/THING.crt in the `openssl ca` database (reason keyCompromise) and
# rewrites crl.pem atomically. Revoking an already revoked cert is a no-op that still
# regenerates the CRL. A running Mosquitto 2.0.11 picks the new CRL up on SIGHUP (checked:
# a revoked device is refused right after `kill -HUP`) or on restart.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ $# -eq 2 ] || die "usage: revoke.sh OUTDIR THING"
[ -d "$1" ] || die "no such directory $1"
OUT=$(cd "$1" && pwd)
THING=$2
check_thing_name "$THING"
[ -f "$OUT/ca-db/index.txt" ] || die "$OUT has no CA database; run make-certs.sh first"
crt=$OUT/things/$THING.crt
[ -f "$crt" ] || die "no certificate for $THING ($crt)"
lock_db "$OUT"
write_ca_config "$OUT"

serial=$(openssl x509 -in "$crt" -noout -serial)
serial=${serial#serial=}
if grep -q "^R	[^	]*	[^	]*	$serial	" "$OUT/ca-db/index.txt"; then
	echo "revoke: $THING (serial $serial) was already revoked"
else
	openssl ca -config "$OUT/ca-db/openssl.cnf" -revoke "$crt" -crl_reason keyCompromise \
		>/dev/null 2>"$OUT/ca-db/last-ca.err" ||
		{ cat "$OUT/ca-db/last-ca.err" >&2; die "openssl ca -revoke failed for $THING"; }
	echo "revoke: $THING (serial $serial) revoked"
fi
gen_crl
