# SPDX-License-Identifier: GPL-2.0-or-later
# Shared helpers for the build harness: paths, step logging, failure reporting.
# Sourced by the other scripts; never run directly.

QR_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QR_WORK=${QR_WORK:-$QR_TOP/build}              # generated, ignored by git
QR_TREE=${QR_TREE:-$QR_WORK/qemu}              # the generated QEMU git tree
QR_CACHE=${QR_CACHE:-/var/cache/qemu-reclaim}  # survives fresh clones (CI)
QR_PATCHES=$QR_TOP/qemu-patches
# The compiler cache: QEMU's configure names the compiler itself, so
# ccache's masquerade directory goes first on PATH.
[ -d /usr/lib/ccache ] && case ":$PATH:" in *:/usr/lib/ccache:*) ;; *) PATH=/usr/lib/ccache:$PATH ;; esac
export CCACHE_DIR=${CCACHE_DIR:-$QR_CACHE/ccache}
# Paths below the checkout count relative to it, and the build directory
# is not hashed: a fresh clone elsewhere (CI) hits what this one compiled.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$QR_TOP}
export CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-30G}
QR_VARIANTS_ALL="system tcmalloc jemalloc asan i386"

QEMU_VERSION=10.2.2
QEMU_DEB_VERSION=1:10.2.2+ds-1                 # the source package that has it
QEMU_ORIG=qemu_${QEMU_VERSION}+ds.orig.tar.xz
QEMU_ORIG_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb

# The baseline commit of the generated tree has fixed metadata so that its
# id, and therefore every exported patch's context, is reproducible.
QR_BASE_AUTHOR="QEMU upstream <qemu-devel@nongnu.org>"
QR_BASE_DATE="2025-07-01T00:00:00Z"

qr_step_name=""

step() {
    qr_step_name="$*"
    printf '\n==> %s\n' "$*" >&2
}

info() {
    printf '    %s\n' "$*" >&2
}

die() {
    printf '\nFAILED in step "%s": %s\n' "${qr_step_name:-setup}" "$*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "this step installs packages and must run as root"
}

# Debian's python3, not a pyenv shim: meson and pycotap come from Debian.
QR_PYTHON=/usr/bin/python3

# Identity for commits made in the generated tree (and their Signed-off-by)
QR_AUTHOR_NAME=${QR_AUTHOR_NAME:-Reclaim Developers}
QR_AUTHOR_EMAIL=${QR_AUTHOR_EMAIL:-reclaim-devel@qemu-reclaim.org}
