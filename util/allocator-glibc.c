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

#ifdef CONFIG_MALLINFO2
static bool glibc_get_stats(QemuAllocatorStats *stats)
{
    struct mallinfo2 mi = mallinfo2();

    stats->allocated = mi.uordblks + mi.hblkhd;
    stats->free = mi.fordblks;
    return true;
}
#else
#define glibc_get_stats NULL
#endif

static bool glibc_release(uint64_t *returned)
{
    malloc_trim(0);
    return false;
}

static void glibc_idle(void)
{
    malloc_trim(IDLE_TRIM_PAD);
}

const AllocatorBackendOps allocator_backend = {
    .name = "glibc",
    .get_stats = glibc_get_stats,
    .release = glibc_release,
    .idle = glibc_idle,
};
