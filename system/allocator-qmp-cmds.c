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
#include "qemu/lockable.h"
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

/*
 * Releases run in worker threads and are notified in the order they ran;
 * events are sent from the main loop in that order.  One BH drains a
 * queue: one-shot BHs scheduled before the main loop polls would run last
 * in, first out.
 */
static QemuMutex events_lock;
static GQueue events = G_QUEUE_INIT;
static QEMUBH *events_bh;

static void release_events_bh(void *opaque)
{
    QemuAllocatorRelease *r;
    AllocatorRelease *ev;

    for (;;) {
        WITH_QEMU_LOCK_GUARD(&events_lock) {
            r = g_queue_pop_head(&events);
        }
        if (!r) {
            return;
        }
        ev = release_to_qapi(r);
        qapi_event_send_allocator_memory_released(ev);
        qapi_free_AllocatorRelease(ev);
        g_free(r);
    }
}

static void on_release(Notifier *notifier, void *data)
{
    WITH_QEMU_LOCK_GUARD(&events_lock) {
        g_queue_push_tail(&events,
                          g_memdup2(data, sizeof(QemuAllocatorRelease)));
        /* Not at startup: the main loop's AioContext does not exist yet */
        if (!events_bh) {
            events_bh = aio_bh_new(qemu_get_aio_context(),
                                   release_events_bh, NULL);
        }
    }
    qemu_bh_schedule(events_bh);
}

static Notifier release_notifier = { .notify = on_release };

/* Before anything can release: automatic releases have events too */
static void __attribute__((__constructor__)) allocator_qmp_init(void)
{
    qemu_mutex_init(&events_lock);
    qemu_allocator_add_release_notifier(&release_notifier);
}
