#!/usr/bin/env bash
# certs/make-certs.sh — create every certificate tidegate's box and tests need.
#
# Usage: certs/make-certs.sh OUTDIR [--things N] [--prefix dev-]
#
# Creates, under OUTDIR only (the repo ignores certs/out/):
#   ca.crt ca.key                  the site CA (EC P-256), kept if it exists already
#   server.crt server.key          the broker, SAN IP:127.0.0.1 and DNS:localhost
#   gateway.crt gateway.key        the tidegate daemon, CN=tidegate-gateway
#   ops.crt ops.key                an operator/test observer, CN=tidegate-ops
#   loadgen.crt loadgen.key        the benchmark load generator, CN=tidegate-loadgen
#   things/<prefix>0001.crt/.key … device certs, CN = thing name (default 5 things)
#   revoked/dev-revoked.crt/.key   a device cert (CN=dev-revoked) revoked at birth
#   crl.pem                        the CRL (valid; lists at least dev-revoked)
#   ca-db/                         the `openssl ca` database (index.txt, serial, …)
#   other-ca/ca.crt, other-ca/dev-0001.crt/.key   a client cert from a foreign CA, for tests
# Idempotent: an existing CA and every cert that chains to it are kept (a revoked one too:
# re-running never undoes a revocation); missing things are added.
# Keys are 0600. Revoke with certs/revoke.sh, add a device with certs/issue-device.sh.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ $# -ge 1 ] || die "usage: make-certs.sh OUTDIR [--things N] [--prefix dev-]"
OUT=$1; shift
THINGS=5
PREFIX=dev-
while [ $# -gt 0 ]; do
	case $1 in
	--things) THINGS=${2:?--things needs a number}; shift 2 ;;
	--prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done
[[ $THINGS =~ ^[0-9]+$ ]] && [ "$THINGS" -le 100000 ] || die "--things must be 0..100000"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ISSUED=0
KEEP_REVOKED=1
lock_db "$OUT"
ensure_ca "$OUT"

# Clients check the SAN (IP:127.0.0.1, DNS:localhost), not the CN.
issue server "$OUT" server_ext localhost
issue gateway "$OUT" client_ext tidegate-gateway
issue ops "$OUT" client_ext tidegate-ops
issue loadgen "$OUT" client_ext tidegate-loadgen

for ((i = 1; i <= THINGS; i++)); do
	name=$(printf '%s%04d' "$PREFIX" "$i")
	check_thing_name "$name"
	issue "$name" "$OUT/things" client_ext
done

# A device cert that is revoked from birth, so the CRL is never trivially empty and broker
# tests have a revoked identity without touching the real things.
if [ ! -f "$OUT/revoked/dev-revoked.crt" ]; then
	issue dev-revoked "$OUT/revoked" client_ext
	openssl ca -config "$OUT/ca-db/openssl.cnf" -revoke "$OUT/revoked/dev-revoked.crt" \
		-crl_reason keyCompromise >/dev/null 2>"$OUT/ca-db/last-ca.err" ||
		{ cat "$OUT/ca-db/last-ca.err" >&2; die "revoking dev-revoked failed"; }
fi

# A client cert from a different CA, with a CN that is a real thing name: the broker must
# refuse it because of its issuer, not because of its name.
other=$OUT/other-ca
if [ ! -f "$other/dev-0001.crt" ]; then
	mkdir -p "$other"
	(umask 077 && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$other/ca.key" -out "$other/ca.crt" -days "$CA_DAYS" \
		-subj "/O=not-tidegate/CN=other-ca" -config "$OUT/ca-db/openssl.cnf" -extensions v3_ca \
		2>/dev/null) || die "creating the other CA failed"
	new_key_csr "$other/dev-0001.key" "$other/dev-0001.csr" dev-0001
	openssl x509 -req -in "$other/dev-0001.csr" -CA "$other/ca.crt" -CAkey "$other/ca.key" \
		-CAcreateserial -days "$CERT_DAYS" -out "$other/dev-0001.crt" \
		-extfile "$OUT/ca-db/openssl.cnf" -extensions client_ext 2>/dev/null ||
		die "signing the other-CA client cert failed"
	rm -f "$other/dev-0001.csr"
	chmod 600 "$other"/*.key
	chmod 644 "$other"/*.crt
fi

gen_crl
echo "make-certs: $OUT (things=$THINGS, newly issued=$ISSUED)"
