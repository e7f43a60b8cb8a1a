/*
 * Allocator backend for glibc's malloc
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * malloc_trim() returns the free pages of every arena, locking one arena
 * at a time, and says only whether it returned anything.  mallinfo2()
 * walks the free lists of every arena, so its cost grows with the number
 * of free chunks; it is the only source of statistics glibc has.
 */

#include "qemu/osdep.h"
#include <malloc.h>
#include "qemu/atomic.h"
#include "allocator-int.h"

/* Same padding as the RCU thread always used: keep 4 MiB at the top */
#define IDLE_TRIM_PAD (4 * MiB)

/*
 * glibc keeps the pages it gave back inside its free chunks and counts them
 * as free, so mallinfo2() alone would call them releasable forever.  Right
 * after a trim, whatever is still free was either given back or is too
 * fragmented to be: none of it is releasable.  Later, reusing given-back
 * pages makes RSS grow by as much, so count each byte RSS has grown since
 * as releasable again.  This errs on the side of calling too much
 * releasable (any other growth of RSS counts too), never too little.
 */
#ifdef CONFIG_MALLINFO2
static uint64_t free_after_trim;
static uint64_t rss_after_trim;

static void glibc_get_stats(QemuAllocatorStats *stats)
{
    struct mallinfo2 mi = mallinfo2();
    uint64_t rss_then = qatomic_read(&rss_after_trim);
    uint64_t growth = stats->rss > rss_then ? stats->rss - rss_then : 0;
    uint64_t kept = qatomic_read(&free_after_trim);

    kept = MIN(mi.fordblks, kept > growth ? kept - growth : 0);
    stats->allocated = mi.uordblks + mi.hblkhd;
    stats->free = mi.fordblks - kept;
    stats->held = stats->allocated + stats->free;
    stats->releasable = stats->free;
    allocator_add_figure(stats, "arena", mi.arena);
    allocator_add_figure(stats, "mmapped", mi.hblkhd);
    allocator_add_figure(stats, "free-chunk-count", mi.ordblks);
    allocator_add_figure(stats, "free-bytes", mi.fordblks);
    allocator_add_figure(stats, "top-releasable", mi.keepcost);
    allocator_add_figure(stats, "free-after-trim", kept);
}

static void glibc_note_trim(void)
{
    qatomic_set(&free_after_trim, mallinfo2().fordblks);
    qatomic_set(&rss_after_trim, qemu_process_rss());
}
#else
#define glibc_get_stats NULL

static void glibc_note_trim(void)
{
}
#endif

static uint64_t glibc_release(uint64_t max_bytes, AllocatorSteps *steps)
{
    /* One step: malloc_trim() cannot be split or bounded */
    allocator_step_begin(steps);
    malloc_trim(0);
    allocator_step_end(steps);
    glibc_note_trim();
    return ALLOCATOR_RETURNED_UNKNOWN;
}

static void glibc_idle(void)
{
    malloc_trim(IDLE_TRIM_PAD);
    glibc_note_trim();
}

const AllocatorBackendOps allocator_backend = {
    .name = "glibc",
    .get_stats = glibc_get_stats,
    .release = glibc_release,
    .idle = glibc_idle,
};
