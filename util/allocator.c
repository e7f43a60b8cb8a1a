/*
 * Return free memory of the memory allocator to the OS, read its statistics
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * This file serializes releases and accounts for them; the allocator
 * specific work is in util/allocator-<backend>.c, chosen by meson.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/lockable.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "allocator-int.h"

/* Held for the whole of a release: they run one at a time */
static QemuMutex release_lock;

/* Protects counters; never held for long */
static QemuMutex counters_lock;
static QemuAllocatorCounters counters;
static NotifierList release_notifiers =
    NOTIFIER_LIST_INITIALIZER(release_notifiers);

static void __attribute__((__constructor__)) allocator_init(void)
{
    qemu_mutex_init(&release_lock);
    qemu_mutex_init(&counters_lock);
}

uint64_t qemu_process_rss(void)
{
#ifdef CONFIG_LINUX
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    int n;

    if (!f) {
        return 0;
    }
    n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * qemu_real_host_page_size() : 0;
#else
    return 0;
#endif
}

const char *qemu_allocator_name(void)
{
    return allocator_backend.name;
}

bool qemu_allocator_can_release(void)
{
    return allocator_backend.release != NULL;
}

bool qemu_allocator_get_stats(QemuAllocatorStats *stats)
{
    memset(stats, 0, sizeof(*stats));
    if (!allocator_backend.get_stats) {
        return false;
    }
    return allocator_backend.get_stats(stats);
}

bool qemu_allocator_stats_walk_heap(void)
{
    return allocator_backend.stats_walk_heap;
}

void qemu_allocator_get_counters(QemuAllocatorCounters *c)
{
    QEMU_LOCK_GUARD(&counters_lock);
    *c = counters;
}

void qemu_allocator_add_release_notifier(Notifier *notifier)
{
    notifier_list_add(&release_notifiers, notifier);
}

bool qemu_allocator_release(QemuAllocatorTrigger trigger,
                            QemuAllocatorRelease *result, Error **errp)
{
    memset(result, 0, sizeof(*result));
    result->trigger = trigger;
    if (!allocator_backend.release) {
        error_setg(errp, "the memory allocator of this build (%s) cannot "
                   "return free memory to the OS", allocator_backend.name);
        return false;
    }

    qemu_mutex_lock(&release_lock);
    WITH_QEMU_LOCK_GUARD(&counters_lock) {
        counters.running = true;
    }
    result->rss_before = qemu_process_rss();
    result->start_ns = get_clock();
    result->has_returned = allocator_backend.release(&result->returned);
    result->duration_ns = get_clock() - result->start_ns;
    result->rss_after = qemu_process_rss();
    WITH_QEMU_LOCK_GUARD(&counters_lock) {
        if (trigger == QEMU_ALLOCATOR_MANUAL) {
            counters.manual++;
        } else {
            counters.automatic++;
        }
        counters.running = false;
        counters.has_last = true;
        counters.last = *result;
    }
    /*
     * Still under release_lock, so that notifiers see the releases in the
     * order they ran.  Notifiers are added at startup only: no lock is
     * needed to walk them.
     */
    notifier_list_notify(&release_notifiers, result);
    qemu_mutex_unlock(&release_lock);
    return true;
}

void qemu_allocator_idle(void)
{
    /*
     * No lock: the backends' idle work may run beside a release (glibc's
     * malloc_trim() and jemalloc's mallctl() lock what they touch), and
     * the RCU thread, which calls this, must never wait for one.  This
     * also needs nothing that a constructor initializes: the RCU thread is
     * started by a constructor too, in an undefined order.
     */
    if (allocator_backend.idle) {
        allocator_backend.idle();
    }
}
