/*
 * Allocator backend for tcmalloc (gperftools)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Only free spans of tcmalloc's page heap can be returned to the OS; the
 * thread, transfer and central caches keep what they hold.  Returning a
 * span holds the page heap's global spin lock for the madvise() of the
 * whole span, and every thread that needs a new span waits for it, so a
 * release is done in small steps with the lock dropped in between.
 */

#include "qemu/osdep.h"
#include <gperftools/malloc_extension_c.h>
#include "allocator-int.h"

/*
 * madvise(MADV_DONTNEED) runs at about 5 GiB/s per core: 2 MiB is well
 * below a millisecond of lock hold time per step.
 */
#define RELEASE_STEP (2 * MiB)
#define IDLE_MIN_FREE (4 * MiB)

static uint64_t tc_property(const char *name)
{
    size_t value = 0;

    MallocExtension_GetNumericProperty(name, &value);
    return value;
}

static void tcmalloc_get_stats(QemuAllocatorStats *stats)
{
    /* Each of these is cheap but for current_allocated_bytes (one walk) */
    uint64_t heap = tc_property("generic.heap_size");
    uint64_t unmapped = tc_property("tcmalloc.pageheap_unmapped_bytes");
    uint64_t pfree = tc_property("tcmalloc.pageheap_free_bytes");
    uint64_t allocated = tc_property("generic.current_allocated_bytes");

    stats->held = heap > unmapped ? heap - unmapped : 0;
    stats->allocated = MIN(allocated, stats->held);
    stats->free = stats->held - stats->allocated;
    stats->releasable = MIN(pfree, stats->free);
    stats->has_returned = true;
    stats->returned = unmapped;
    allocator_add_figure(stats, "heap-size", heap);
    allocator_add_figure(stats, "pageheap-free", pfree);
    allocator_add_figure(stats, "pageheap-unmapped", unmapped);
    /* What the thread, transfer and central caches hold, together */
    allocator_add_figure(stats, "caches", stats->free - stats->releasable);
}

/*
 * gperftools remembers how far a ReleaseToSystem() call overshot (it
 * returns whole spans) and swallows that much of later requests.  Track
 * that credit so each step really returns something.  Only releases,
 * which never run in parallel, touch it.
 */
static uint64_t tc_credit;

static uint64_t tcmalloc_release(uint64_t max_bytes, AllocatorSteps *steps)
{
    uint64_t total = 0;
    uint64_t ask = RELEASE_STEP;

    for (;;) {
        uint64_t pfree = tc_property("tcmalloc.pageheap_free_bytes");
        uint64_t before, after, got;

        if (!pfree || (max_bytes && total >= max_bytes)) {
            break;
        }
        if (max_bytes) {
            ask = MIN(ask, max_bytes - total);
        }
        before = tc_property("tcmalloc.pageheap_unmapped_bytes");
        allocator_step_begin(steps);
        MallocExtension_ReleaseToSystem(ask + tc_credit);
        allocator_step_end(steps);
        after = tc_property("tcmalloc.pageheap_unmapped_bytes");
        got = after > before ? after - before : 0;
        if (!got) {
            /* Our credit estimate was short: the request was swallowed */
            if (ask > 2 * (pfree + tc_credit)) {
                break;   /* nothing more can be returned */
            }
            ask *= 2;
            continue;
        }
        tc_credit = got > ask ? got - ask : 0;
        total += got;
        ask = RELEASE_STEP;
    }
    return total;
}

static void tcmalloc_idle(void)
{
    if (tc_property("tcmalloc.pageheap_free_bytes") >= IDLE_MIN_FREE) {
        AllocatorSteps steps = { 0 };

        tcmalloc_release(0, &steps);
    }
}

const AllocatorBackendOps allocator_backend = {
    .name = "tcmalloc",
    .can_limit = true,
    .get_stats = tcmalloc_get_stats,
    .release = tcmalloc_release,
    .idle = tcmalloc_idle,
};
