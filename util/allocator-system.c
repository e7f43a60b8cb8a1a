/*
 * Allocator backend for a C library allocator without release or statistics
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "allocator-int.h"

const AllocatorBackendOps allocator_backend = {
    .name = "system",
};
