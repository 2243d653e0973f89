#!/usr/bin/env bash
# packaging/deb/build-deb.sh ARCH [--tests] — build build/tidegate_<version>_<ARCH>.deb.
#
# No debhelper and no source package: the binary package is what `make install
# PREFIX=/usr` puts into a staging tree, built in build/deb/<ARCH>/ with Debian's
# hardening flags (dpkg-buildflags) and, for a foreign ARCH, Debian's cross compiler and
# multiarch -dev packages. dpkg-shlibdeps computes Depends from the binaries, and
# dpkg-gencontrol writes the control file with the version from packaging/debian/changelog
# (the one the binary prints). Every file under /etc is a conffile. --tests also builds
# the unit tests in the same tree (without sanitizers), for qemu-user.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ARCH=${1:?usage: build-deb.sh ARCH [--tests]}
TESTS=0
[ "${2:-}" = --tests ] && TESTS=1
umask 022

# dpkg-architecture warns that $CC is not a cross compiler: it is told which one below
eval "$(dpkg-architecture -a"$ARCH" -s 2>/dev/null)"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
TRIPLET=$DEB_HOST_MULTIARCH
CROSS=
[ "$DEB_HOST_ARCH" = "$DEB_BUILD_ARCH" ] || CROSS=$TRIPLET-
command -v "${CROSS}gcc" >/dev/null || {
	echo "build-deb: ${CROSS}gcc not found: packaging/install-deps.sh --$ARCH installs it" >&2
	exit 2
}

B=build/deb/$ARCH
STAGE=$REPO/$B/stage
WORK=$REPO/$B/pkg
mk=(make --no-print-directory -j"$(nproc)" B="$B" ARCH="$ARCH" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS")
"${mk[@]}" all $([ $TESTS -eq 1 ] && echo unit-bins-rel)
rm -rf "$STAGE" "$WORK"
"${mk[@]}" -s install DESTDIR="$STAGE" PREFIX=/usr >/dev/null

# Debian's stripping (dh_strip): sections of no use at run time; .so keeps its dynamic symbols
"${CROSS}strip" --remove-section=.comment --remove-section=.note "$STAGE"/usr/bin/*
"${CROSS}strip" --remove-section=.comment --remove-section=.note --strip-unneeded \
	"$STAGE/usr/lib/$TRIPLET/tidegate/tidegate_auth.so"

DOC=$STAGE/usr/share/doc/tidegate
install -m 0644 packaging/debian/copyright "$DOC/copyright"
gzip -9n < packaging/debian/changelog > "$DOC/changelog.gz"
install -d "$STAGE/usr/share/lintian/overrides"
install -m 0644 packaging/debian/lintian-overrides "$STAGE/usr/share/lintian/overrides/tidegate"

install -d "$STAGE/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
(cd "$STAGE" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') > "$STAGE/DEBIAN/conffiles"

# dpkg-shlibdeps and dpkg-gencontrol read debian/control and debian/changelog from the
# current directory
install -d "$WORK/debian"
cp packaging/debian/control packaging/debian/changelog "$WORK/debian/"
(
	cd "$WORK"
	echo "misc:Depends=" > debian/substvars
	dpkg-shlibdeps -Tdebian/substvars --warnings=1 \
		"$STAGE/usr/bin/tidegate" "$STAGE/usr/bin/tidegate-device-sim" \
		"$STAGE/usr/lib/$TRIPLET/tidegate/tidegate_auth.so"
	dpkg-gencontrol -ptidegate -Tdebian/substvars -P"$STAGE"
)
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
VERSION=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
OUT=build/tidegate_${VERSION}_${DEB_HOST_ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
echo "build-deb: $OUT ($(stat -c %s "$OUT") bytes)"
