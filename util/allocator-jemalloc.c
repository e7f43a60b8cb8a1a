/*
 * Allocator backend for jemalloc
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * jemalloc's statistics are a snapshot taken when "epoch" is written, and
 * stay stale until the next write.  Unused pages are "dirty" (resident) or
 * "muzzy" (given to the kernel with MADV_FREE, but still counted in RSS
 * until the kernel needs the memory); purging an arena returns both with
 * MADV_DONTNEED, so RSS really drops.  Pages of slabs that still hold one
 * live object, and thread caches, are not returned.
 */

#include "qemu/osdep.h"
#include <jemalloc/jemalloc.h>
#include "allocator-int.h"

#define ARENAS_ALL stringify(MALLCTL_ARENAS_ALL)

static uint64_t je_size(const char *name)
{
    size_t value = 0;
    size_t len = sizeof(value);

    return mallctl(name, &value, &len, NULL, 0) ? 0 : value;
}

static unsigned int je_unsigned(const char *name)
{
    unsigned int value = 0;
    size_t len = sizeof(value);

    return mallctl(name, &value, &len, NULL, 0) ? 0 : value;
}

/* Refresh the statistics snapshot. */
static void je_refresh(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);

    mallctl("epoch", &epoch, &len, &epoch, len);
}

/* Unused pages, dirty or muzzy, of every arena. */
static uint64_t je_unused(void)
{
    uint64_t page = je_size("arenas.page");

    return (je_size("stats.arenas." ARENAS_ALL ".pdirty") +
            je_size("stats.arenas." ARENAS_ALL ".pmuzzy")) * page;
}

static bool jemalloc_get_stats(QemuAllocatorStats *stats)
{
    uint64_t unused, active, allocated, tcache, held;
    bool enabled = false;
    size_t len = sizeof(enabled);

    /* A jemalloc built with --disable-stats reports zeros */
    if (mallctl("config.stats", &enabled, &len, NULL, 0) || !enabled) {
        return false;
    }
    je_refresh();
    unused = je_unused();
    active = je_size("stats.active");
    allocated = je_size("stats.allocated");
    /* jemalloc counts objects in thread caches as allocated */
    tcache = je_size("stats.arenas." ARENAS_ALL ".tcache_bytes");

    stats->allocated = allocated > tcache ? allocated - tcache : 0;
    held = MAX(active + unused, stats->allocated);
    stats->free = held - stats->allocated;
    stats->has_releasable = true;
    stats->releasable = MIN(unused, stats->free);
    stats->has_returned = true;
    stats->returned = je_size("stats.retained");
    return true;
}

static bool jemalloc_release(uint64_t *returned)
{
    unsigned int narenas = je_unsigned("arenas.narenas");
    uint64_t before, after;
    bool stats = false;
    size_t len = sizeof(stats);
    unsigned int i;

    je_refresh();
    before = je_unused();
    /* One arena at a time: each purge takes only that arena's locks */
    for (i = 0; i < narenas; i++) {
        g_autofree char *name = g_strdup_printf("arena.%u.purge", i);

        mallctl(name, NULL, NULL, NULL, 0);
    }
    je_refresh();
    after = je_unused();
    *returned = before > after ? before - after : 0;
    /* Without statistics, before and after read as 0 */
    return !mallctl("config.stats", &stats, &len, NULL, 0) && stats;
}

/*
 * jemalloc purges unused pages after they stayed unused for dirty_decay_ms,
 * but only when some allocator activity gives it the chance, so an idle
 * QEMU keeps them.  At idle time let it catch up: this applies jemalloc's
 * own decay times, and costs no walk of the heap.  (Its background
 * threads would do the same with more threads in every QEMU process;
 * MALLOC_CONF=background_thread:true still turns them on.)
 */
static void jemalloc_idle(void)
{
    mallctl("arena." ARENAS_ALL ".decay", NULL, NULL, NULL, 0);
}

const AllocatorBackendOps allocator_backend = {
    .name = "jemalloc",
    .get_stats = jemalloc_get_stats,
    .release = jemalloc_release,
    .idle = jemalloc_idle,
};
