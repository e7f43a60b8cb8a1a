/*
 * Monitor interface to the memory allocator
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SYSTEM_ALLOCATOR_H
#define SYSTEM_ALLOCATOR_H

#include "qapi/qapi-commands-allocator.h"
#include "qemu/allocator.h"

AllocatorStats *allocator_stats_to_qapi(const QemuAllocatorStats *stats);
AllocatorRelease *allocator_release_to_qapi(const QemuAllocatorRelease *r);
XAllocatorInfo *allocator_info_to_qapi(const QemuAllocatorStats *stats);

#endif
