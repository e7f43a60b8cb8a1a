/*
 * HMP commands for returning free allocator memory
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * HMP commands run in the main loop, which must not wait for the
 * allocator.  "info allocator" prints what is cheap to know: the release
 * counters and the last release, and the statistics where reading them
 * is a few counter reads; with glibc, whose statistics walk the heap, it
 * names the QMP command that reads them in a worker thread.
 * "release_free_memory" starts a release in the thread pool and returns
 * at once: a release takes up to tens of milliseconds.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "block/thread-pool.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qemu/allocator.h"
#include "qemu/cutils.h"
#include "qemu/timer.h"

/* Main loop only: a release started here has not ended yet */
static bool release_pending;

static void print_size(Monitor *mon, const char *label, uint64_t bytes)
{
    g_autofree char *s = size_to_str(bytes);

    monitor_printf(mon, "  %-12s %s\n", label, s);
}

static void print_stats(Monitor *mon)
{
    QemuAllocatorStats stats;

    if (qemu_allocator_stats_walk_heap()) {
        monitor_printf(mon, "statistics: not read here, reading them walks "
                       "the heap; QMP x-query-allocator-stats has them\n");
        return;
    }
    if (!qemu_allocator_get_stats(&stats)) {
        monitor_printf(mon, "statistics: none\n");
        return;
    }
    monitor_printf(mon, "statistics:\n");
    print_size(mon, "allocated:", stats.allocated);
    print_size(mon, "free:", stats.free);
    if (stats.has_releasable) {
        print_size(mon, "releasable:", stats.releasable);
    }
    if (stats.has_returned) {
        print_size(mon, "returned:", stats.returned);
    }
}

void hmp_info_allocator(Monitor *mon, const QDict *qdict)
{
    QemuAllocatorCounters c;

    monitor_printf(mon, "allocator: %s\n", qemu_allocator_name());
    print_stats(mon);
    qemu_allocator_get_counters(&c);
    monitor_printf(mon, "releases: %" PRIu64 " manual, %" PRIu64
                   " automatic\n", c.manual, c.automatic);
    if (c.running || release_pending) {
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
    release_pending = false;
}

void hmp_release_free_memory(Monitor *mon, const QDict *qdict)
{
    QemuAllocatorCounters c;

    if (!qemu_allocator_can_release()) {
        monitor_printf(mon, "The memory allocator of this build (%s) cannot "
                       "return free memory to the OS\n",
                       qemu_allocator_name());
        return;
    }
    qemu_allocator_get_counters(&c);
    if (release_pending || c.running) {
        monitor_printf(mon, "A release is already running\n");
        return;
    }
    release_pending = true;
    thread_pool_submit_aio(release_work, NULL, release_done, NULL);
    monitor_printf(mon, "Returning free memory to the OS in the background; "
                   "'info allocator' shows the result\n");
}
