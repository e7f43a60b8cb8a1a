/*
 * HMP commands for returning free allocator memory
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * HMP commands run in the main loop, which must not wait for the
 * allocator: a release takes up to tens of milliseconds, and with glibc
 * reading the statistics walks the whole heap.  Both run in the thread
 * pool instead; "info allocator" shows the statistics read last, and
 * starts reading new ones when they are more than a second old or a
 * release ran since.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "block/thread-pool.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qemu/allocator.h"
#include "qemu/cutils.h"
#include "qemu/timer.h"

#define STATS_MAX_AGE_MS 1000

/* Main loop only */
static bool stats_reading;
static bool has_stats;
static QemuAllocatorStats stats;
static int64_t stats_time_ms;
static bool stats_stale;
static bool release_busy;

typedef struct StatsWork {
    bool has_stats;
    QemuAllocatorStats stats;
} StatsWork;

static int stats_work(void *opaque)
{
    StatsWork *w = opaque;

    w->has_stats = qemu_allocator_get_stats(&w->stats);
    return 0;
}

static void stats_done(void *opaque, int ret)
{
    g_autofree StatsWork *w = opaque;

    has_stats = w->has_stats;
    stats = w->stats;
    stats_time_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    stats_reading = false;
    stats_stale = false;
}

static void refresh_stats(void)
{
    if (!stats_reading) {
        StatsWork *w = g_new0(StatsWork, 1);

        stats_reading = true;
        thread_pool_submit_aio(stats_work, w, stats_done, w);
    }
}

static void print_size(Monitor *mon, const char *label, uint64_t bytes)
{
    g_autofree char *s = size_to_str(bytes);

    monitor_printf(mon, "  %-12s %s\n", label, s);
}

void hmp_info_allocator(Monitor *mon, const QDict *qdict)
{
    int64_t age = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - stats_time_ms;
    QemuAllocatorCounters c;

    monitor_printf(mon, "allocator: %s\n", qemu_allocator_name());
    if (!stats_time_ms) {
        monitor_printf(mon, "statistics: being read, ask again\n");
    } else if (!has_stats) {
        monitor_printf(mon, "statistics: none\n");
    } else {
        monitor_printf(mon, "statistics, read %" PRId64 ".%03" PRId64
                       " s ago%s:\n", age / 1000, age % 1000,
                       stats_stale ? ", before the last release" : "");
        print_size(mon, "allocated:", stats.allocated);
        print_size(mon, "free:", stats.free);
        if (stats.has_releasable) {
            print_size(mon, "releasable:", stats.releasable);
        }
        if (stats.has_returned) {
            print_size(mon, "returned:", stats.returned);
        }
    }
    if (!stats_time_ms || stats_stale || age > STATS_MAX_AGE_MS) {
        refresh_stats();
    }

    qemu_allocator_get_counters(&c);
    monitor_printf(mon, "releases: %" PRIu64 " manual, %" PRIu64
                   " automatic\n", c.manual, c.automatic);
    if (c.running || release_busy) {
        monitor_printf(mon, "a release is running\n");
    }
    if (c.has_last) {
        const QemuAllocatorRelease *r = &c.last;
        g_autofree char *ret = size_to_str(r->returned);
        g_autofree char *before = size_to_str(r->rss_before);
        g_autofree char *after = size_to_str(r->rss_after);

        monitor_printf(mon, "last release: %s, returned %s in %.3f ms",
                       r->trigger == QEMU_ALLOCATOR_MANUAL ?
                       "manual" : "automatic",
                       r->has_returned ? ret : "(not counted)",
                       r->duration_ns / (double)SCALE_MS);
        if (r->rss_before) {
            monitor_printf(mon, "; process RSS %s -> %s", before, after);
        }
        monitor_printf(mon, "\n");
    }
}

static int release_work(void *opaque)
{
    QemuAllocatorRelease result;

    qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &result, NULL);
    return 0;
}

static void release_done(void *opaque, int ret)
{
    /* Read again only when asked: with glibc, a read walks the heap */
    release_busy = false;
    stats_stale = true;
}

void hmp_release_free_memory(Monitor *mon, const QDict *qdict)
{
    if (!qemu_allocator_can_release()) {
        monitor_printf(mon, "The memory allocator of this build (%s) cannot "
                       "return free memory to the OS\n",
                       qemu_allocator_name());
        return;
    }
    if (release_busy) {
        monitor_printf(mon, "A release is already running\n");
        return;
    }
    release_busy = true;
    thread_pool_submit_aio(release_work, NULL, release_done, NULL);
    monitor_printf(mon, "Returning free memory to the OS in the background; "
                   "'info allocator' shows the result\n");
}
