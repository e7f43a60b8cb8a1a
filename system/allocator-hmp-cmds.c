/*
 * HMP commands for returning free allocator memory
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-allocator.h"
#include "qobject/qdict.h"
#include "qemu/cutils.h"
#include "system/allocator.h"

static void print_size(Monitor *mon, const char *label, uint64_t bytes)
{
    g_autofree char *s = size_to_str(bytes);

    monitor_printf(mon, "  %-12s %s\n", label, s);
}

static void print_release(Monitor *mon, const AllocatorRelease *r)
{
    g_autofree char *ret = size_to_str(r->returned);
    g_autofree char *before = size_to_str(r->rss_before);
    g_autofree char *after = size_to_str(r->rss_after);

    monitor_printf(mon, "%s release: returned %s%s in %.3f ms "
                   "(steps: %u, longest %.3f ms); RSS %s -> %s%s\n",
                   AllocatorReleaseTrigger_str(r->trigger), ret,
                   r->returned_from_rss ? " (by RSS)" : "",
                   r->duration_us / 1000.0, r->steps,
                   r->longest_step_us / 1000.0, before, after,
                   r->shared ? ", done by a release another request "
                   "started" : "");
}

void hmp_info_allocator(Monitor *mon, const QDict *qdict)
{
    g_autoptr(XAllocatorInfo) info = NULL;
    QemuAllocatorStats stats;
    AllocatorStats *s;
    AllocatorReleaseCounters *c;
    AllocatorFigureList *f;
    g_autofree char *total = NULL;

    /* Same as x-query-allocator-stats, read here: HMP waits anyway */
    qemu_allocator_get_stats(&stats);
    info = allocator_info_to_qapi(&stats);
    s = info->stats;
    c = info->releases;
    monitor_printf(mon, "allocator: %s%s\n", AllocatorBackend_str(s->backend),
                   info->can_release ? "" : " (cannot return memory)");
    print_size(mon, "allocated:", s->allocated);
    print_size(mon, "held:", s->held);
    print_size(mon, "free:", s->free);
    print_size(mon, "releasable:", s->releasable);
    if (s->has_returned) {
        print_size(mon, "returned:", s->returned);
    }
    print_size(mon, "RSS:", s->rss);
    for (f = s->figures; f; f = f->next) {
        g_autofree char *label = g_strdup_printf("%s:", f->value->name);
        g_autofree char *v = g_str_has_suffix(f->value->name, "-count") ?
            g_strdup_printf("%" PRIu64, f->value->value) :
            size_to_str(f->value->value);

        monitor_printf(mon, "    %-18s %s\n", label, v);
    }
    total = size_to_str(c->returned);
    monitor_printf(mon, "releases: %" PRIu64 " manual, %" PRIu64
                   " automatic, %" PRIu64 " idle; %s returned in %.3f ms\n",
                   c->manual, c->automatic, c->idle, total,
                   c->time_us / 1000.0);
    if (info->release_running) {
        monitor_printf(mon, "a release is in progress\n");
    }
    monitor_printf(mon, "policy: release after backup %s, at least %" PRIu64
                   " bytes; idle-time release every %u ms\n",
                   info->policy->release_after_backup ? "on" : "off",
                   info->policy->min_releasable,
                   info->policy->idle_interval);
    if (info->automatic_pending) {
        monitor_printf(mon, "an automatic release is pending\n");
    }
    if (info->last_skip_reason) {
        monitor_printf(mon, "automatic releases skipped: %" PRIu64
                       ", last because %s\n", info->automatic_skipped,
                       info->last_skip_reason);
    }
    if (info->last_release) {
        monitor_printf(mon, "last ");
        print_release(mon, info->last_release);
    }
}

#if defined(CONFIG_MALLOC_TRIM) || defined(CONFIG_TCMALLOC) || \
    defined(CONFIG_JEMALLOC)
void coroutine_fn hmp_release_free_memory(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;
    XReleaseFreeMemoryArgs args = {
        .has_max_bytes = qdict_haskey(qdict, "max"),
        .max_bytes = qdict_get_try_int(qdict, "max", 0),
    };
    g_autoptr(XReleaseFreeMemoryResult) ret =
        qmp_x_release_free_memory(&args, &err);

    if (hmp_handle_error(mon, err)) {
        return;
    }
    print_release(mon, ret->release);
}
#endif
