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

static void jemalloc_get_stats(QemuAllocatorStats *stats)
{
    uint64_t page, dirty, muzzy, active, allocated, tcache;

    je_refresh();
    page = je_size("arenas.page");
    dirty = je_size("stats.arenas." ARENAS_ALL ".pdirty") * page;
    muzzy = je_size("stats.arenas." ARENAS_ALL ".pmuzzy") * page;
    active = je_size("stats.active");
    allocated = je_size("stats.allocated");
    /* jemalloc counts objects in thread caches as allocated */
    tcache = je_size("stats.arenas." ARENAS_ALL ".tcache_bytes");

    stats->allocated = allocated > tcache ? allocated - tcache : 0;
    stats->held = MAX(active + dirty + muzzy, stats->allocated);
    stats->free = stats->held - stats->allocated;
    stats->releasable = MIN(dirty + muzzy, stats->free);
    stats->has_returned = true;
    stats->returned = je_size("stats.retained");
    allocator_add_figure(stats, "active", active);
    allocator_add_figure(stats, "resident", je_size("stats.resident"));
    allocator_add_figure(stats, "mapped", je_size("stats.mapped"));
    allocator_add_figure(stats, "metadata", je_size("stats.metadata"));
    allocator_add_figure(stats, "dirty", dirty);
    allocator_add_figure(stats, "muzzy", muzzy);
    allocator_add_figure(stats, "tcache", tcache);
}

static uint64_t jemalloc_release(uint64_t max_bytes, AllocatorSteps *steps)
{
    unsigned int narenas = je_unsigned("arenas.narenas");
    uint64_t before, after;
    unsigned int i;

    je_refresh();
    before = je_unused();
    /* One arena per step: each purge takes only that arena's locks */
    for (i = 0; i < narenas; i++) {
        g_autofree char *name = g_strdup_printf("arena.%u.purge", i);

        allocator_step_begin(steps);
        mallctl(name, NULL, NULL, NULL, 0);
        allocator_step_end(steps);
    }
    je_refresh();
    after = je_unused();
    return before > after ? before - after : 0;
}

/*
 * jemalloc purges unused pages after they stayed unused for dirty_decay_ms,
 * but only when some allocator activity gives it the chance.  At idle time
 * let it catch up: this honours the decay times instead of dropping pages
 * that may be reused in a moment.
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
