#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the test guest's initramfs (a gzip'ed newc cpio) deterministically.

    mkinitramfs.py OUT BUSYBOX INIT GUESTWORK MODDIR MODULE...

MODDIR is an unpacked /lib/modules/VERSION with a modules.dep; the named
modules and everything they depend on go in, with /etc/modules.load listing
them in an order insmod accepts (dependencies first).  Written here rather
than with cpio(1): no host tool needed, device nodes without mknod, every
file owned by root with mtime 0, so the same inputs give the same bytes.
"""
import gzip
import os
import stat
import sys


def newc(out, name, mode, data=b"", rdev=(0, 0), ino=[0]):
    ino[0] += 1
    name_b = name.encode() + b"\0"
    fields = [ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
              len(name_b), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(name_b + b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
    out.write(data + b"\0" * ((4 - len(data) % 4) % 4))


def load_order(moddir, wanted):
    deps = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[mod] = rest.split()
    by_name = {os.path.basename(m)[:-3].replace("-", "_"): m for m in deps}
    order = []

    def visit(mod):
        if mod in order:
            return
        for dep in deps[mod]:
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            sys.exit("mkinitramfs: no module %s in %s" % (name, moddir))
        visit(by_name[name])
    return order


def main():
    out_path, busybox, init, guestwork, moddir = sys.argv[1:6]
    order = load_order(moddir, sys.argv[6:])
    kver = os.path.basename(os.path.normpath(moddir))
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
            for d in ["bin", "dev", "etc", "lib", "lib/modules",
                      "lib/modules/" + kver, "proc", "sys", "tmp"]:
                newc(out, d, stat.S_IFDIR | 0o755)
            # the kernel opens /dev/console for init before /init runs
            newc(out, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
            newc(out, "dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
            for path, src in [("init", init), ("bin/busybox", busybox),
                              ("bin/guestwork", guestwork)]:
                with open(src, "rb") as f:
                    newc(out, path, stat.S_IFREG | 0o755, f.read())
            made = set()
            for mod in order:
                parts = mod.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in made:
                        made.add(d)
                        newc(out, "lib/modules/%s/%s" % (kver, d),
                             stat.S_IFDIR | 0o755)
                with open(os.path.join(moddir, mod), "rb") as f:
                    newc(out, "lib/modules/%s/%s" % (kver, mod),
                         stat.S_IFREG | 0o644, f.read())
            newc(out, "etc/modules.load", stat.S_IFREG | 0o644,
                 "".join("%s/%s\n" % (kver, m) for m in order).encode())
            newc(out, "TRAILER!!!", 0)
    os.rename(tmp, out_path)
    print(" ".join(os.path.basename(m)[:-3] for m in order))


main()
