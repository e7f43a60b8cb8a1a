/*
 * Allocator backend for glibc's malloc
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * malloc_trim() returns the free pages of every arena, locking one arena
 * at a time, and says only whether it returned anything.  mallinfo2()
 * walks the free lists of every arena, so its cost grows with the number
 * of free chunks; it is the only source of statistics glibc has, and it
 * does not know which free pages were already returned.
 */

#include "qemu/osdep.h"
#include <malloc.h>
#include "allocator-int.h"

/* Same padding as the RCU thread always used: keep 4 MiB at the top */
#define IDLE_TRIM_PAD (4 * MiB)

/*
 * The sanitizers replace malloc: glibc's arenas are then nearly unused,
 * and mallinfo2() and malloc_trim() would describe and trim those, not
 * the heap.  Such a build says it has no backend ("system"); only the
 * RCU thread's trim stays, as it always was.
 */
#if defined(QEMU_SANITIZE_ADDRESS) || defined(QEMU_SANITIZE_THREAD)
#define HEAP_IS_GLIBCS 0
#else
#define HEAP_IS_GLIBCS 1
#endif

#if defined(CONFIG_MALLINFO2) && HEAP_IS_GLIBCS
static bool glibc_get_stats(QemuAllocatorStats *stats)
{
    struct mallinfo2 mi = mallinfo2();

    stats->allocated = mi.uordblks + mi.hblkhd;
    stats->free = mi.fordblks;
    return true;
}
#define glibc_stats_walk_heap true
#else
#define glibc_get_stats NULL
#define glibc_stats_walk_heap false
#endif

#if HEAP_IS_GLIBCS
static bool glibc_release(uint64_t *returned)
{
    malloc_trim(0);
    return false;
}
#else
#define glibc_release NULL
#endif

static void glibc_idle(void)
{
    malloc_trim(IDLE_TRIM_PAD);
}

const AllocatorBackendOps allocator_backend = {
    .name = HEAP_IS_GLIBCS ? "glibc" : "system",
    .get_stats = glibc_get_stats,
    .stats_walk_heap = glibc_stats_walk_heap,
    .release = glibc_release,
    .idle = glibc_idle,
};
