/*
 * Interface between util/allocator.c and the allocator backends
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef UTIL_ALLOCATOR_INT_H
#define UTIL_ALLOCATOR_INT_H

#include "qemu/allocator.h"
#include "qemu/timer.h"
#include "qemu/units.h"

/* Timing of the bounded steps a release is made of. */
typedef struct AllocatorSteps {
    unsigned int count;
    int64_t max_ns;
    int64_t start_ns;
} AllocatorSteps;

static inline void allocator_step_begin(AllocatorSteps *s)
{
    s->start_ns = get_clock();
}

static inline void allocator_step_end(AllocatorSteps *s)
{
    s->max_ns = MAX(s->max_ns, get_clock() - s->start_ns);
    s->count++;
}

/* Value for AllocatorBackendOps.release when the allocator does not count. */
#define ALLOCATOR_RETURNED_UNKNOWN UINT64_MAX

typedef struct AllocatorBackendOps {
    const char *name;
    /* release honours max_bytes */
    bool can_limit;
    /*
     * Fill in every field of @stats but backend and rss, which are
     * already set.  May be called from any thread, concurrently with
     * anything.  NULL: no statistics.
     */
    void (*get_stats)(QemuAllocatorStats *stats);
    /*
     * Return free memory to the OS; never called twice at once.  Returns
     * the bytes returned, or ALLOCATOR_RETURNED_UNKNOWN.  NULL: cannot.
     */
    uint64_t (*release)(uint64_t max_bytes, AllocatorSteps *steps);
    /*
     * The RCU thread's idle-time release, already rate limited; never
     * called at the same time as release.  NULL: nothing to do.
     */
    void (*idle)(void);
} AllocatorBackendOps;

extern const AllocatorBackendOps allocator_backend;

void allocator_add_figure(QemuAllocatorStats *stats, const char *name,
                          uint64_t value);

#endif
