/*
 * Interface between util/allocator.c and the allocator backends
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef UTIL_ALLOCATOR_INT_H
#define UTIL_ALLOCATOR_INT_H

#include "qemu/allocator.h"
#include "qemu/units.h"

typedef struct AllocatorBackendOps {
    const char *name;
    /*
     * Fill in @stats; any thread, concurrently with anything.  Returns
     * false, or NULL: the allocator has no statistics.
     */
    bool (*get_stats)(QemuAllocatorStats *stats);
    /* get_stats walks the heap: too slow for the main loop */
    bool stats_walk_heap;
    /*
     * Return free memory to the OS; never called twice at once.  Returns
     * false if it cannot tell how much it returned, else sets @returned.
     * NULL: the allocator cannot return memory.
     */
    bool (*release)(uint64_t *returned);
    /*
     * The RCU thread's idle-time release; may run at the same time as
     * release.  NULL: nothing to do.
     */
    void (*idle)(void);
} AllocatorBackendOps;

extern const AllocatorBackendOps allocator_backend;

#endif
