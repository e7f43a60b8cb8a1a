/*
 * QMP commands and events for returning free allocator memory
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
#include "system/allocator.h"
#include "system/stats.h"

static AllocatorBackend backend_of(const char *name)
{
    return qapi_enum_parse(&AllocatorBackend_lookup, name,
                           ALLOCATOR_BACKEND_SYSTEM, NULL);
}

AllocatorStats *allocator_stats_to_qapi(const QemuAllocatorStats *s)
{
    AllocatorStats *ret = g_new0(AllocatorStats, 1);
    AllocatorFigureList **tail = &ret->figures;
    unsigned int i;

    ret->backend = backend_of(s->backend);
    ret->allocated = s->allocated;
    ret->held = s->held;
    ret->free = s->free;
    ret->releasable = s->releasable;
    ret->has_returned = s->has_returned;
    ret->returned = s->returned;
    ret->rss = s->rss;
    for (i = 0; i < s->n_figures; i++) {
        AllocatorFigure *f = g_new(AllocatorFigure, 1);

        f->name = g_strdup(s->figures[i].name);
        f->value = s->figures[i].value;
        QAPI_LIST_APPEND(tail, f);
    }
    return ret;
}

AllocatorRelease *allocator_release_to_qapi(const QemuAllocatorRelease *r)
{
    AllocatorRelease *ret = g_new0(AllocatorRelease, 1);

    ret->backend = backend_of(r->backend);
    ret->trigger = r->trigger == QEMU_ALLOCATOR_MANUAL ?
                   ALLOCATOR_RELEASE_TRIGGER_MANUAL :
                   ALLOCATOR_RELEASE_TRIGGER_AUTOMATIC;
    ret->returned = r->returned;
    ret->returned_from_rss = r->returned_from_rss;
    ret->rss_before = r->rss_before;
    ret->rss_after = r->rss_after;
    ret->duration_us = r->duration_ns / SCALE_US;
    ret->steps = r->steps;
    ret->longest_step_us = r->max_step_ns / SCALE_US;
    ret->shared = r->shared;
    return ret;
}

XAllocatorInfo *allocator_info_to_qapi(const QemuAllocatorStats *stats)
{
    XAllocatorInfo *info = g_new0(XAllocatorInfo, 1);
    AllocatorReleaseCounters *rc = g_new0(AllocatorReleaseCounters, 1);
    QemuAllocatorCounters c;
    char reason[128];

    qemu_allocator_get_counters(&c);
    info->stats = allocator_stats_to_qapi(stats);
    info->can_release = qemu_allocator_can_release();
    info->can_limit = qemu_allocator_can_limit();
    info->release_running = c.running;
    info->automatic_pending = qemu_allocator_release_pending();
    info->automatic_skipped = qemu_allocator_get_skipped(reason,
                                                         sizeof(reason));
    if (info->automatic_skipped) {
        info->last_skip_reason = g_strdup(reason);
    }
    info->policy = g_new0(AllocatorPolicy, 1);
    info->policy->release_after_backup =
        qemu_allocator_get_release_after_backup();
    info->policy->min_releasable = qemu_allocator_get_min_releasable();
    info->policy->idle_interval = qemu_allocator_get_idle_interval();
    rc->manual = c.manual;
    rc->automatic = c.automatic;
    rc->idle = c.idle;
    rc->shared = c.shared;
    rc->returned = c.returned;
    rc->time_us = c.time_ns / SCALE_US;
    info->releases = rc;
    if (c.has_last) {
        info->last_release = allocator_release_to_qapi(&c.last);
    }
    return info;
}

static int read_stats(void *opaque)
{
    qemu_allocator_get_stats(opaque);
    return 0;
}

XAllocatorInfo *coroutine_fn qmp_x_query_allocator_stats(Error **errp)
{
    QemuAllocatorStats stats;

    /*
     * glibc's mallinfo2() walks every free chunk of every arena: on a
     * fragmented heap that is hundreds of microseconds, too long for the
     * main loop of a process that agents poll.  Read in a worker.
     */
    thread_pool_submit_co(read_stats, &stats);
    return allocator_info_to_qapi(&stats);
}

#if defined(CONFIG_MALLOC_TRIM) || defined(CONFIG_TCMALLOC) || \
    defined(CONFIG_JEMALLOC)
typedef struct ReleaseWork {
    uint64_t max_bytes;
    bool ok;
    QemuAllocatorRelease result;
    QemuAllocatorStats stats;
    Error *err;
} ReleaseWork;

/* In a worker thread: the allocator's work must not stall the main loop */
static int release_work(void *opaque)
{
    ReleaseWork *w = opaque;

    w->ok = qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, w->max_bytes,
                                   &w->result, &w->err);
    if (w->ok) {
        qemu_allocator_get_stats(&w->stats);
    }
    return 0;
}

XReleaseFreeMemoryResult *coroutine_fn
qmp_x_release_free_memory(XReleaseFreeMemoryArgs *args, Error **errp)
{
    ReleaseWork w = { 0 };
    XReleaseFreeMemoryResult *ret;

    if (args->has_max_bytes) {
        /* QMP turns -1 into UINT64_MAX: refuse it rather than guess */
        if (!args->max_bytes || args->max_bytes > INT64_MAX) {
            error_setg(errp, "'max-bytes' must be greater than 0 and at "
                       "most %" PRId64, INT64_MAX);
            return NULL;
        }
        w.max_bytes = args->max_bytes;
    }
    thread_pool_submit_co(release_work, &w);
    if (!w.ok) {
        error_propagate(errp, w.err);
        return NULL;
    }
    ret = g_new0(XReleaseFreeMemoryResult, 1);
    ret->release = allocator_release_to_qapi(&w.result);
    ret->stats = allocator_stats_to_qapi(&w.stats);
    return ret;
}
#endif

/*
 * Releases run in worker threads; events are emitted from the main loop,
 * where the monitor's event throttling lives.
 */
static void release_event_bh(void *opaque)
{
    g_autofree QemuAllocatorRelease *r = opaque;
    g_autoptr(AllocatorRelease) ev = allocator_release_to_qapi(r);

    qapi_event_send_allocator_memory_released(ev);
}

static void on_release(Notifier *notifier, void *data)
{
    QemuAllocatorRelease *copy = g_memdup2(data, sizeof(*copy));

    aio_bh_schedule_oneshot(qemu_get_aio_context(), release_event_bh, copy);
}

static Notifier release_notifier = { .notify = on_release };

/*
 * The "allocator" provider of query-stats, so that tools which already
 * read query-stats see the allocator without new code.
 */
typedef struct AllocatorStatDesc {
    const char *name;
    StatsType type;
    bool has_unit;
    StatsUnit unit;
    int16_t exponent;   /* base 10 */
} AllocatorStatDesc;

#define BYTES(n)  { n, STATS_TYPE_INSTANT, true, STATS_UNIT_BYTES, 0 }
#define COUNT(n)  { n, STATS_TYPE_CUMULATIVE, false, 0, 0 }

enum {
    STAT_ALLOCATED, STAT_HELD, STAT_FREE, STAT_RELEASABLE, STAT_RETURNED,
    STAT_RSS, STAT_RELEASES_MANUAL, STAT_RELEASES_AUTOMATIC,
    STAT_RELEASES_IDLE, STAT_RETURNED_TOTAL, STAT_RELEASE_TIME, STAT__MAX
};

static const AllocatorStatDesc allocator_stats[STAT__MAX] = {
    [STAT_ALLOCATED] = BYTES("allocated"),
    [STAT_HELD] = BYTES("held"),
    [STAT_FREE] = BYTES("free"),
    [STAT_RELEASABLE] = BYTES("releasable"),
    [STAT_RETURNED] = BYTES("returned"),
    [STAT_RSS] = BYTES("rss"),
    [STAT_RELEASES_MANUAL] = COUNT("releases-manual"),
    [STAT_RELEASES_AUTOMATIC] = COUNT("releases-automatic"),
    [STAT_RELEASES_IDLE] = COUNT("releases-idle"),
    [STAT_RETURNED_TOTAL] = { "returned-total", STATS_TYPE_CUMULATIVE, true,
                              STATS_UNIT_BYTES, 0 },
    [STAT_RELEASE_TIME] = { "release-time", STATS_TYPE_CUMULATIVE, true,
                            STATS_UNIT_SECONDS, -6 },
};

static void allocator_stats_cb(StatsResultList **result, StatsTarget target,
                               strList *names, strList *targets, Error **errp)
{
    uint64_t values[STAT__MAX];
    StatsList *list = NULL;
    QemuAllocatorStats s;
    QemuAllocatorCounters c;
    int i;

    if (target != STATS_TARGET_VM) {
        return;
    }
    qemu_allocator_get_stats(&s);
    qemu_allocator_get_counters(&c);
    values[STAT_ALLOCATED] = s.allocated;
    values[STAT_HELD] = s.held;
    values[STAT_FREE] = s.free;
    values[STAT_RELEASABLE] = s.releasable;
    values[STAT_RETURNED] = s.returned;
    values[STAT_RSS] = s.rss;
    values[STAT_RELEASES_MANUAL] = c.manual;
    values[STAT_RELEASES_AUTOMATIC] = c.automatic;
    values[STAT_RELEASES_IDLE] = c.idle;
    values[STAT_RETURNED_TOTAL] = c.returned;
    values[STAT_RELEASE_TIME] = c.time_ns / SCALE_US;

    for (i = STAT__MAX - 1; i >= 0; i--) {
        Stats *stat;

        if ((i == STAT_RETURNED && !s.has_returned) ||
            !apply_str_list_filter(allocator_stats[i].name, names)) {
            continue;
        }
        stat = g_new0(Stats, 1);
        stat->name = g_strdup(allocator_stats[i].name);
        stat->value = g_new0(StatsValue, 1);
        stat->value->type = QTYPE_QNUM;
        stat->value->u.scalar = values[i];
        QAPI_LIST_PREPEND(list, stat);
    }
    add_stats_entry(result, STATS_PROVIDER_ALLOCATOR, NULL, list);
}

static void allocator_schemas_cb(StatsSchemaList **result, Error **errp)
{
    StatsSchemaValueList *list = NULL;
    int i;

    for (i = STAT__MAX - 1; i >= 0; i--) {
        const AllocatorStatDesc *d = &allocator_stats[i];
        StatsSchemaValue *v = g_new0(StatsSchemaValue, 1);

        v->name = g_strdup(d->name);
        v->type = d->type;
        v->has_unit = d->has_unit;
        v->unit = d->unit;
        v->exponent = d->exponent;
        v->has_base = d->exponent != 0;
        v->base = 10;
        QAPI_LIST_PREPEND(list, v);
    }
    add_stats_schema(result, STATS_PROVIDER_ALLOCATOR, STATS_TARGET_VM, list);
}

/* Before anything can release: the event is also for automatic releases */
static void allocator_qmp_init(void)
{
    qemu_allocator_add_release_notifier(&release_notifier);
    add_stats_callbacks(STATS_PROVIDER_ALLOCATOR, allocator_stats_cb,
                        allocator_schemas_cb);
}

module_init(allocator_qmp_init, MODULE_INIT_QOM);
