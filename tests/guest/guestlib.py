#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot the test guest (tests/guest/README.md) in a given QEMU and drive it.

    with Guest(qemu, "build/guest", disks=["/tmp/d0.raw"]) as g:
        g.cmd("write vda A 64")             # -> {"cmd": "write", "ok": True, ...}
        job = g.start_job("write vda B")    # returns at once
        ...                                 # a backup over g.qmp, say
        g.wait(job)

The guest's kernel console (ttyS0) goes to WORKDIR/console.log; guestwork
talks on a port of its own (ttyS1, a unix socket here), so no kernel
message can land inside an answer.  Run as a program, it boots the guest
once and prints its figures (the end-to-end check of the guest).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "scripts"))
from qmplib import QMP  # noqa: E402

MARKER = "GW: "


class GuestError(RuntimeError):
    pass


def kvm_usable(qemu, guest_dir, timeout=20):
    """Whether a guest really runs under KVM here, cached per host boot.

    /dev/kvm opening, or QEMU accepting -accel kvm with machine none, proves
    nothing: on this project's machines (nested virtualisation) a guest
    under KVM hangs in the host kernel.  The only reliable probe is to boot
    the guest itself (under a second when KVM works), so the first call
    after a host boot pays up to `timeout` seconds and records the answer.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = "unknown"
    cache = os.path.join(tempfile.gettempdir(), "guestlib-kvm-%s" % boot_id)
    try:
        with open(cache) as f:
            return f.read().strip() == "yes"
    except OSError:
        pass
    ok = True
    try:
        with Guest(qemu, guest_dir, accel="kvm", boot_timeout=timeout) as g:
            g.poweroff()
    except GuestError:
        ok = False
    with open(cache, "w") as f:
        f.write("yes\n" if ok else "no\n")
    return ok


class Guest:
    """One QEMU running the test guest.

    qemu: the binary; guest_dir: what scripts/make-guest.sh wrote; disks:
    raw image paths, attached in order as virtio-blk (the guest's vda, vdb,
    ...; block nodes disk0, disk1, ..., devices vd0, vd1, ...); accel: "tcg",
    "kvm" or "auto" (kvm_usable()); extra: more QEMU arguments; append: more
    kernel arguments (e.g. "clocksource=hpet", see the README on stalls);
    nice: run QEMU under nice -n NICE.
    """

    def __init__(self, qemu, guest_dir, disks=(), mem_mib=1024, smp=1,
                 accel="tcg", machine="pc", extra=(), workdir=None,
                 boot_timeout=180, nice=None, append=""):
        self.qemu = qemu
        self.guest_dir = guest_dir
        self.disks = list(disks)
        self.mem_mib = mem_mib
        self.smp = smp
        self.accel = accel
        self.machine = machine
        self.extra = list(extra)
        self.boot_timeout = boot_timeout
        self.nice = nice
        self.append = append
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="guest-")
        self.console_log = os.path.join(self.workdir, "console.log")
        self.qemu_log = os.path.join(self.workdir, "qemu.log")
        self.qmp_path = os.path.join(self.workdir, "qmp.sock")
        self.gw_path = os.path.join(self.workdir, "gw.sock")
        self.proc = None
        self.sock = None
        self.buf = b""
        self._qmp = None
        self.boot_seconds = None      # QEMU started -> guestwork answers
        self.init_uptime = None       # the guest's uptime when /init ran it
        self.noise = []               # lines on the port that are no answers

    # ---- lifecycle ----------------------------------------------------------

    def argv(self, accel):
        args = [self.qemu, "-machine", self.machine, "-accel", accel,
                "-m", str(self.mem_mib), "-smp", str(self.smp),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot",
                "-kernel", os.path.join(self.guest_dir, "vmlinuz"),
                "-initrd", os.path.join(self.guest_dir, "initramfs.cpio.gz"),
                # panic=-1 with -no-reboot: a guest that dies ends QEMU
                "-append", ("console=ttyS0 gw.port=ttyS1 panic=-1 "
                            + self.append).strip(),
                "-chardev", "file,id=con,path=" + self.console_log,
                "-serial", "chardev:con",
                "-chardev", "socket,id=gw,path=%s,server=on,wait=off"
                % self.gw_path,
                "-serial", "chardev:gw",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        for i, path in enumerate(self.disks):
            args += ["-blockdev", "driver=file,filename=%s,node-name=disk%d-file"
                     % (path, i),
                     "-blockdev", "driver=raw,file=disk%d-file,node-name=disk%d"
                     % (i, i),
                     # share-rw: a backup job may write a disk the guest
                     # also has (the guest then reads the backup's target)
                     "-device", "virtio-blk-pci,drive=disk%d,id=vd%d,"
                     "share-rw=on" % (i, i)]
        return args + self.extra

    def start(self):
        accel = self.accel
        if accel == "auto":
            accel = "kvm" if kvm_usable(self.qemu, self.guest_dir) else "tcg"
        self.accel_used = accel
        for p in (self.qmp_path, self.gw_path, self.console_log):
            if os.path.exists(p):
                os.unlink(p)
        t0 = time.monotonic()
        cmd = self.argv(accel)
        if self.nice is not None:
            cmd = ["nice", "-n", str(self.nice)] + cmd
        with open(self.qemu_log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        deadline = t0 + self.boot_timeout
        while not os.path.exists(self.gw_path):
            self._check_alive("starting")
            if time.monotonic() > deadline:
                self._fail("QEMU made no serial socket in %d s"
                           % self.boot_timeout)
            time.sleep(0.01)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.gw_path)
        self._sync(deadline)
        self.boot_seconds = time.monotonic() - t0
        for line in self.console_lines():
            if line.startswith("init: up "):
                self.init_uptime = float(line.split()[2])
        return self

    def _sync(self, deadline):
        """Ping until guestwork answers, then drain the surplus pongs.

        Until guestwork opens its port, what the host sends there is lost,
        so the first pings get no answer; once it runs, pings queued in
        the meantime all get theirs.  The last ping's token tells the
        answer to this ping from the others.
        """
        n = 0
        while True:
            n += 1
            self._send("ping boot-%d" % n)
            ans = self._read_answer(min(deadline, time.monotonic() + 0.5),
                                    quiet_timeout=True)
            if ans is not None:
                break
            if time.monotonic() > deadline:
                self._fail("the guest did not answer within %d s"
                           % self.boot_timeout)
        self._send("ping synced")
        while True:
            ans = self._read_answer(time.monotonic() + 30)
            if ans.get("pong") == "synced":
                return

    def poweroff(self, timeout=60):
        """Ask the guest to power off; wait for QEMU to exit."""
        self.cmd("poweroff", timeout=timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._fail("QEMU still runs %d s after the guest's poweroff"
                       % timeout)
        return self.proc.returncode

    def close(self):
        if self._qmp:
            self._qmp.sock.close()
            self._qmp = None
        if self.sock:
            self.sock.close()
            self.sock = None
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.own_workdir and os.environ.get("GUESTLIB_KEEP") is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    @property
    def qmp(self):
        """A QMP connection, made on first use (QEMU serves one client per
        socket: close_qmp() lets another tool in)."""
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path, timeout=60)
        return self._qmp

    def close_qmp(self):
        if self._qmp:
            self._qmp.sock.close()
            self._qmp = None

    # ---- commands -------------------------------------------------------------

    def cmd(self, line, timeout=600, check=True):
        """Send one command, return its answer as a dict.  With check, an
        answer with "ok": false raises GuestError."""
        self._send(line)
        ans = self._read_answer(time.monotonic() + timeout)
        if check and not ans.get("ok"):
            raise GuestError("guest: %r failed: %s"
                             % (line, ans.get("error", ans)))
        return ans

    def start_job(self, line):
        """Start a write, verify, stall, io-latency or touch in the
        background; returns the job number for wait()/running()."""
        return self.cmd("start " + line)["job"]

    def wait(self, job, timeout=600, check=True):
        return self.cmd("wait %d" % job, timeout=timeout, check=check)

    def running(self, job):
        """Whether the job still runs (its result stays for wait())."""
        return self.cmd("poll %d" % job)["running"]

    # ---- plumbing -------------------------------------------------------------

    def console_lines(self):
        try:
            with open(self.console_log, errors="replace") as f:
                return [line.rstrip("\r\n") for line in f]
        except OSError:
            return []

    def _send(self, line):
        if "\n" in line:
            raise ValueError("one command per line")
        try:
            self.sock.sendall(line.encode() + b"\n")
        except OSError as e:
            self._fail("cannot send %r: %s" % (line, e))

    def _read_answer(self, deadline, quiet_timeout=False):
        """The next "GW: " line as a dict; None on timeout if quiet_timeout."""
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode(errors="replace").strip("\r")
                at = line.find(MARKER)
                if at < 0:
                    if line:
                        self.noise.append(line)
                    continue
                try:
                    return json.loads(line[at + len(MARKER):])
                except ValueError:
                    self._fail("unparsable answer: %r" % line)
            left = deadline - time.monotonic()
            if left <= 0:
                if quiet_timeout:
                    return None
                self._fail("no answer from the guest in time")
            self._check_alive("waiting for an answer")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                time.sleep(0.2)     # let QEMU's exit status be there
                self._check_alive("reading")
                self._fail("reading the guest's port: %s" % e)
            if not data:
                self._check_alive("reading")
                self._fail("the guest's port closed")
            self.buf += data

    def _check_alive(self, what):
        if self.proc.poll() is not None:
            self._fail("QEMU exited with status %d while %s"
                       % (self.proc.returncode, what))

    def _fail(self, why):
        try:
            with open(self.qemu_log, errors="replace") as f:
                qlog = f.read().strip().splitlines()[-5:]
        except OSError:
            qlog = []
        tail = self.console_lines()[-15:]
        raise GuestError("%s\n  qemu stderr: %s\n  console (last lines):\n    %s"
                         % (why, " | ".join(qlog) or "-",
                            "\n    ".join(tail) or "-"))


def _demo():
    ap = argparse.ArgumentParser(description="Boot the test guest once and "
                                 "print what it measures.")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap.add_argument("--guest", default=os.path.join(top, "build", "guest"))
    ap.add_argument("--accel", default=os.environ.get("GUESTLIB_ACCEL", "tcg"))
    ap.add_argument("--disk-mib", type=int, default=256)
    ap.add_argument("--touch-mib", type=int, default=512)
    ap.add_argument("--smp", type=int, default=1)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="guest-demo-")
    disk = os.path.join(work, "disk0.raw")
    with open(disk, "wb") as f:
        f.truncate(args.disk_mib << 20)
    try:
        with Guest(args.qemu, args.guest, disks=[disk], smp=args.smp,
                   accel=args.accel) as g:
            ver = g.qmp.cmd("query-version")["qemu"]
            print("QEMU %d.%d.%d, accel %s: booted in %.2f s (guest uptime "
                  "%.2f s when /init started guestwork)"
                  % (ver["major"], ver["minor"], ver["micro"], g.accel_used,
                     g.boot_seconds, g.init_uptime or -1))
            steps = ["info",
                     "write vda A %d" % args.disk_mib,
                     "verify vda A %d" % args.disk_mib,
                     "verify vda B 1",
                     "touch %d" % args.touch_mib,
                     "stall 2",
                     "io-latency vda 2"]
            for line in steps:
                t = time.monotonic()
                ans = g.cmd(line, check=line != "verify vda B 1")
                print("%-18s %5.2f s  %s" % (line, time.monotonic() - t,
                                            json.dumps(ans)))
            # The guest overwrites its disk while it measures its stalls
            # (with --smp 1 both share the one vCPU: the stall loop then
            # also sees the writer's time slices)
            job = g.start_job("write vda C")
            stall = g.cmd("stall 2")
            running = g.running(job)
            print("%-18s        %s" % ("stall 2 during a write", json.dumps(stall)))
            print("%-18s        %s (still running after the stall: %s)"
                  % ("the write", json.dumps(g.wait(job)), running))
            print("%-18s        %s" % ("verify vda C",
                                       json.dumps(g.cmd("verify vda C"))))
            t = time.monotonic()
            rc = g.poweroff()
            print("poweroff: QEMU exited with status %d after %.2f s"
                  % (rc, time.monotonic() - t))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    _demo()
