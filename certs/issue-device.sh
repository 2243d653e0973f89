#!/usr/bin/env bash
# certs/issue-device.sh — issue a key and certificate for one more device.
#
# Usage: certs/issue-device.sh OUTDIR THING
# Writes OUTDIR/things/THING.key (0600) and THING.crt with CN=THING, signed by the CA that
# make-certs.sh created. If THING already has a valid, unrevoked cert, nothing changes;
# if its cert was revoked, a new key and cert replace it (the old serial stays revoked).
# Prints the path of the certificate.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ $# -eq 2 ] || die "usage: issue-device.sh OUTDIR THING"
[ -d "$1" ] || die "no such directory $1"
OUT=$(cd "$1" && pwd)
THING=$2
check_thing_name "$THING"
[ -f "$OUT/ca.crt" ] && [ -f "$OUT/ca-db/index.txt" ] ||
	die "$OUT has no CA; run make-certs.sh first"
lock_db "$OUT"
write_ca_config "$OUT"
ISSUED=0
issue "$THING" "$OUT/things" client_ext
echo "$OUT/things/$THING.crt"
