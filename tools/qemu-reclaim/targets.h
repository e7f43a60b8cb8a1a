/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which QEMUs to talk to: socket paths, directories, globs, tcp:HOST:PORT.
 */
#pragma once

#include <glib.h>

/* Where Proxmox VE puts one QMP socket per VM, <vmid>.qmp. */
#define TARGETS_PROXMOX_DIR "/var/run/qemu-server"

typedef struct {
    char *name;         /* "100" for /var/run/qemu-server/100.qmp */
    char *address;      /* a path, or tcp:HOST:PORT */
} VmTarget;

void vm_target_free(VmTarget *target);

/*
 * Resolve @specs (NULL or empty: the Proxmox directory, if it exists)
 * into a GPtrArray of VmTarget, in a stable order, without duplicates.
 * Directories and globs are read again on every call: VMs come and go.
 * A directory without sockets yields nothing (a host without VMs); a glob
 * that matches no socket and a missing directory are errors.
 */
GPtrArray *targets_resolve(const char *const *specs, GError **error);

/* Order of VM names: numeric ids by value ("99" before "100"). */
int targets_compare_names(const char *a, const char *b);
