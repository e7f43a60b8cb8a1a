/*
 * QMP commands and event for returning free allocator memory
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-allocator.h"
#include "qapi/qapi-events-allocator.h"
#include "qemu/allocator.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "block/aio.h"
#include "block/thread-pool.h"

static AllocatorRelease *release_to_qapi(const QemuAllocatorRelease *r)
{
    AllocatorRelease *ret = g_new0(AllocatorRelease, 1);

    ret->trigger = r->trigger == QEMU_ALLOCATOR_MANUAL ?
                   ALLOCATOR_RELEASE_TRIGGER_MANUAL :
                   ALLOCATOR_RELEASE_TRIGGER_AUTOMATIC;
    ret->has_returned = r->has_returned;
    ret->returned = r->returned;
    ret->has_process_rss_before = r->rss_before != 0;
    ret->process_rss_before = r->rss_before;
    ret->has_process_rss_after = r->rss_after != 0;
    ret->process_rss_after = r->rss_after;
    ret->duration_us = r->duration_ns / SCALE_US;
    return ret;
}

typedef struct StatsWork {
    bool has_stats;
    QemuAllocatorStats stats;
} StatsWork;

static int read_stats(void *opaque)
{
    StatsWork *w = opaque;

    w->has_stats = qemu_allocator_get_stats(&w->stats);
    return 0;
}

AllocatorInfo *coroutine_fn qmp_x_query_allocator_stats(Error **errp)
{
    AllocatorInfo *info = g_new0(AllocatorInfo, 1);
    QemuAllocatorCounters c;
    StatsWork w;

    /* glibc walks every free chunk: keep that out of the main loop */
    thread_pool_submit_co(read_stats, &w);
    info->backend = qapi_enum_parse(&AllocatorBackend_lookup,
                                    qemu_allocator_name(),
                                    ALLOCATOR_BACKEND_SYSTEM, &error_abort);
    if (w.has_stats) {
        info->stats = g_new0(AllocatorStats, 1);
        info->stats->allocated = w.stats.allocated;
        info->stats->free = w.stats.free;
        info->stats->has_releasable = w.stats.has_releasable;
        info->stats->releasable = w.stats.releasable;
        info->stats->has_returned = w.stats.has_returned;
        info->stats->returned = w.stats.returned;
    }
    qemu_allocator_get_counters(&c);
    info->manual_releases = c.manual;
    info->automatic_releases = c.automatic;
    if (c.has_last) {
        info->last_release = release_to_qapi(&c.last);
    }
    return info;
}

typedef struct ReleaseWork {
    bool ok;
    QemuAllocatorRelease result;
    Error *err;
} ReleaseWork;

static int release_work(void *opaque)
{
    ReleaseWork *w = opaque;

    w->ok = qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &w->result,
                                   &w->err);
    return 0;
}

AllocatorRelease *coroutine_fn qmp_x_release_free_memory(Error **errp)
{
    ReleaseWork w = { 0 };

    /* In a worker thread: the allocator's work must not stall the guest */
    thread_pool_submit_co(release_work, &w);
    if (!w.ok) {
        error_propagate(errp, w.err);
        return NULL;
    }
    return release_to_qapi(&w.result);
}

/* Releases run in worker threads; events are sent from the main loop */
static void release_event_bh(void *opaque)
{
    g_autofree QemuAllocatorRelease *r = opaque;
    g_autoptr(AllocatorRelease) ev = release_to_qapi(r);

    qapi_event_send_allocator_memory_released(ev);
}

static void on_release(Notifier *notifier, void *data)
{
    QemuAllocatorRelease *copy = g_memdup2(data, sizeof(*copy));

    aio_bh_schedule_oneshot(qemu_get_aio_context(), release_event_bh, copy);
}

static Notifier release_notifier = { .notify = on_release };

/* Before anything can release: automatic releases have events too */
static void allocator_qmp_init(void)
{
    qemu_allocator_add_release_notifier(&release_notifier);
}

module_init(allocator_qmp_init, MODULE_INIT_QOM);
