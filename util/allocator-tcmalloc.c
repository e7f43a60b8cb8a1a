/*
 * Allocator backend for tcmalloc (gperftools)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Only free spans of tcmalloc's page heap can be returned to the OS; the
 * thread, transfer and central caches keep what they hold.  Returning
 * memory holds the page heap's global spin lock, which every thread that
 * needs a new span waits for, so a release asks for a little at a time
 * and the lock is dropped in between.  A span is the unit, though: one
 * large free span is returned under one hold of the lock.
 */

#include "qemu/osdep.h"
#include <gperftools/malloc_extension_c.h>
#include "allocator-int.h"

/*
 * madvise(MADV_DONTNEED) runs at about 5 GiB/s per core: 2 MiB is well
 * below a millisecond of lock hold time per step.
 */
#define RELEASE_STEP (2 * MiB)
#define MAX_ASK (16 * RELEASE_STEP)

static uint64_t tc_property(const char *name)
{
    size_t value = 0;

    MallocExtension_GetNumericProperty(name, &value);
    return value;
}

static bool tcmalloc_get_stats(QemuAllocatorStats *stats)
{
    size_t allocated;
    uint64_t heap, unmapped, pfree, held;

    /* Every gperftools release has these; a stub library would not */
    if (!MallocExtension_GetNumericProperty("generic.current_allocated_bytes",
                                            &allocated)) {
        return false;
    }
    heap = tc_property("generic.heap_size");
    unmapped = tc_property("tcmalloc.pageheap_unmapped_bytes");
    pfree = tc_property("tcmalloc.pageheap_free_bytes");
    held = heap > unmapped ? heap - unmapped : 0;

    stats->allocated = MIN(allocated, held);
    stats->free = held - stats->allocated;
    stats->has_releasable = true;
    stats->releasable = MIN(pfree, stats->free);
    stats->has_returned = true;
    stats->returned = unmapped;
    return true;
}

/*
 * gperftools remembers how far a ReleaseToSystem() call overshot (it
 * returns whole spans) and swallows that much of later requests.  Track
 * that credit so each step really returns something.  Only releases,
 * which never run in parallel, touch it.
 */
static uint64_t tc_credit;

/*
 * Return at most what was free when the release started: memory that
 * other threads free meanwhile must not keep the release going forever.
 */
static uint64_t tcmalloc_release_upto(uint64_t budget)
{
    uint64_t total = 0;
    uint64_t ask = RELEASE_STEP;

    while (total < budget) {
        uint64_t pfree = tc_property("tcmalloc.pageheap_free_bytes");
        uint64_t before, after, got;

        if (!pfree) {
            break;
        }
        before = tc_property("tcmalloc.pageheap_unmapped_bytes");
        MallocExtension_ReleaseToSystem(ask + tc_credit);
        after = tc_property("tcmalloc.pageheap_unmapped_bytes");
        got = after > before ? after - before : 0;
        if (!got) {
            /*
             * Our credit estimate was short and the request was swallowed:
             * ask for more, but never so much that one call could return
             * a large part of the heap under one hold of the lock.
             */
            if (ask >= MAX_ASK || ask > 2 * (pfree + tc_credit)) {
                break;
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

static bool tcmalloc_release(uint64_t *returned)
{
    *returned = tcmalloc_release_upto(
        tc_property("tcmalloc.pageheap_free_bytes"));
    return true;
}

const AllocatorBackendOps allocator_backend = {
    .name = "tcmalloc",
    .get_stats = tcmalloc_get_stats,
    .release = tcmalloc_release,
};
