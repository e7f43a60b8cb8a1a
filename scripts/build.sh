#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the generated QEMU tree, one build directory per allocator variant:
#   system    glibc malloc, malloc_trim enabled
#   tcmalloc  --enable-malloc=tcmalloc (gperftools)
#   jemalloc  --enable-malloc=jemalloc
#             (these three can also run the test guest, tests/guest: TCG,
#             the pc machine, its serial ports and virtio-blk; see GUEST)
#   asan      AddressSanitizer + UndefinedBehaviorSanitizer, system allocator
#   i386      a 32-bit x86 host (i686 cross build), glibc malloc_trim,
#             qemu-system-i386 (QEMU refuses 64-bit targets on 32-bit hosts)
# The three allocator builds also have QEMU's rbd driver (librbd), for the
# Ceph test and benchmarks; the asan and i386 builds do not (see variant_flags).
# Usage: scripts/build.sh [variant...]   (default: all of them)
# A second run only rebuilds what changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || read -r -a variants <<<"$QR_VARIANTS_ALL"

COMMON=(
    --python="$QR_PYTHON"
    --target-list=x86_64-softmmu
    --enable-kvm
    --without-default-features --without-default-devices
    --disable-docs --disable-install-blobs
    --enable-tools
)

# Everything the configuration builds, tests included (what the prefix
# checks build too); QR_TARGETS="qemu-img ..." builds only those.
QR_TARGETS=${QR_TARGETS:-}

# The one target each build has: a 32-bit host cannot run a 64-bit one.
variant_target() {
    case "$1" in
    i386) echo i386-softmmu ;;
    *)    echo x86_64-softmmu ;;
    esac
}

# A build that boots the test guest: TCG (KVM hangs on these machines;
# tests/guest/README.md) and the devices of configs/devices/.../$GUEST_DEVICES.mak,
# written by guest_devices() below.  The +ds tarball has no firmware: like
# Debian's own QEMU, these builds take SeaBIOS and the option ROMs from
# the seabios and qemu-system-data packages (for the guest and for QEMU's
# qtests of the pc machine).
GUEST_DEVICES=qr-guest
GUEST_FIRMWARE=(/usr/share/seabios /usr/share/qemu)
GUEST="--enable-tcg --with-devices-x86_64=$GUEST_DEVICES --firmwarepath=$(IFS=:; echo "${GUEST_FIRMWARE[*]}")"
variant_flags() {
    case "$1" in
    system)   echo "$GUEST" --enable-malloc-trim --enable-rbd ;;
    tcmalloc) echo "$GUEST" --enable-malloc=tcmalloc --enable-rbd ;;
    jemalloc) echo "$GUEST" --enable-malloc=jemalloc --enable-rbd ;;
    # The sanitizers replace malloc: nothing of glibc's to trim or count,
    # so this build has the "system" backend that says so, although
    # malloc_trim exists (configure's default finds it).  No rbd here:
    # the rbd test needs a backend that can release (it would only skip),
    # and librados/librbd are not instrumented, so their own threads and
    # allocations would only add reports about Ceph, not about the series.
    # No guest either: TCG under ASan would only make the build and the
    # tests slower, the guest tests run in the three allocator builds.
    asan)     echo --disable-tcg --enable-asan --enable-ubsan ;;
    # Upstream QEMU still supports 32-bit hosts (deprecated, not dropped):
    # this build keeps the series honest there (64-bit atomics, size_t
    # and pointer widths), built like QEMU's own debian-i686-cross CI job
    # with Debian's i686 cross compiler and i386 multiarch libraries
    # (scripts/deps.sh).  glibc allocator like "system"; no rbd (the Ceph
    # test uses the 64-bit builds; librbd:i386 would only add packages);
    # no fdt, which the i386 target does not need: libfdt-dev:i386 cannot
    # be installed beside the libfdt-dev of the other builds, and meson
    # would otherwise try to download its dtc subproject.
    i386)     echo --disable-tcg --cross-prefix=i686-linux-gnu- --enable-malloc-trim --disable-fdt ;;
    *) die "unknown variant '$1' (known: $QR_VARIANTS_ALL)" ;;
    esac
}

# The "+ds" tarball has no edk2 firmware, but pc-bios/meson.build unpacks it
# whenever bzip2 exists and an x86_64 target is built.  These builds need
# no UEFI (the guest boots with SeaBIOS from Debian's seabios package,
# tests/guest/guestlib.py) and install no blobs, so empty stand-ins (outside git's
# view, never committed) let meson set up without touching the series.
edk2_stand_ins() {
    local f
    for f in $(sed -n "s/^ *'\(edk2-[a-z0-9_-]*\.fd\)',\$/\1/p" "$QR_TREE/pc-bios/meson.build"); do
        [ -e "$QR_TREE/pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"$QR_TREE/pc-bios/$f.bz2"
    done
    grep -qx '/pc-bios/edk2-\*.fd.bz2' "$QR_TREE/.git/info/exclude" 2>/dev/null ||
        echo '/pc-bios/edk2-*.fd.bz2' >>"$QR_TREE/.git/info/exclude"
}

# configure takes device sets only from its own configs/devices: ours is
# written there, outside git's view like the stand-ins above.  Under
# --without-default-devices nothing but what it names (and what that
# selects) is built: the pc machine brings its ISA serial ports.
guest_devices() {
    local f=$QR_TREE/configs/devices/x86_64-softmmu/$GUEST_DEVICES.mak
    # USB_HID: QEMU's usb-hcd-uhci-test, which runs wherever UHCI is built
    # (the pc machine's PIIX brings it), plugs a usb-tablet.
    # CXL, its type-3 device, PXB, PCI_EXPRESS and PCIE_PORT only because
    # 10.2's Kconfig selects ACPI_CXL for every x86 ACPI machine, and
    # hw/acpi/cxl.c then needs all of them to link and start; with default
    # devices they are on by default, here (--allnoconfig) only if named.
    printf '%s\n' "# The test guest's machine (scripts/build.sh; tests/guest)" \
        CONFIG_I440FX=y CONFIG_VIRTIO_PCI=y CONFIG_VIRTIO_BLK=y \
        CONFIG_USB_HID=y \
        CONFIG_CXL=y CONFIG_CXL_MEM_DEVICE=y CONFIG_PXB=y CONFIG_PCI_EXPRESS=y \
        CONFIG_PCIE_PORT=y >"$f.new"
    cmp -s "$f.new" "$f" && rm "$f.new" || mv "$f.new" "$f"
    grep -qx "/configs/devices/x86_64-softmmu/$GUEST_DEVICES.mak" "$QR_TREE/.git/info/exclude" ||
        echo "/configs/devices/x86_64-softmmu/$GUEST_DEVICES.mak" >>"$QR_TREE/.git/info/exclude"
}

[ -d "$QR_TREE/.git" ] || die "no QEMU tree at $QR_TREE: run scripts/tree.sh first"
edk2_stand_ins
guest_devices

for v in "${variants[@]}"; do
    step "Building QEMU variant '$v'"
    dir=$QR_WORK/build-$v
    common=("${COMMON[@]/#--target-list=*/--target-list=$(variant_target "$v")}")
    flags="${common[*]} $(variant_flags "$v") ${QR_EXTRA_CONFIGURE:-}"
    mkdir -p "$dir"
    if [ ! -f "$dir/build.ninja" ] || [ "$(cat "$dir/.qr-configure" 2>/dev/null)" != "$flags" ]; then
        info "configure $flags"
        # shellcheck disable=SC2086
        (cd "$dir" && "$QR_TREE/configure" $flags) >"$dir/configure.log" 2>&1 ||
            die "configure of '$v' failed; last lines of $dir/configure.log:
$(tail -n 25 "$dir/configure.log")"
        echo "$flags" >"$dir/.qr-configure"
    fi
    # Run from the build tree, QEMU looks for every data path inside its
    # qemu-bundle directory, which mirrors the installed tree: the firmware
    # directories go there as links.
    case " $flags " in *" --firmwarepath="*)
        for d in "${GUEST_FIRMWARE[@]}"; do
            mkdir -p "$dir/qemu-bundle$(dirname "$d")"
            ln -sfn "$d" "$dir/qemu-bundle$d"
        done ;;
    esac
    start=$(date +%s)
    # shellcheck disable=SC2086
    ninja -C "$dir" $QR_TARGETS >"$dir/ninja.log" 2>&1 ||
        die "build of '$v' failed; errors from $dir/ninja.log:
$(grep -E -A6 'error:|FAILED' "$dir/ninja.log" | head -n 60)"
    info "built in $(( $(date +%s) - start )) s ($(grep -c '^\[' "$dir/ninja.log" || true) steps)"
done
