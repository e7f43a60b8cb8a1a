/*
 * Return free memory of the memory allocator to the OS, read its statistics
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * This file serializes releases and measures them; the allocator specific
 * work is in util/allocator-<backend>.c, chosen by meson.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/lockable.h"
#include "qemu/thread.h"
#include "allocator-int.h"

#define IDLE_INTERVAL_DEFAULT_MS 1000

static QemuMutex release_lock;
static QemuCond release_cond;
/* Protected by release_lock */
static bool release_running;
static uint64_t releases_started;
static bool last_release_unlimited;
static QemuAllocatorRelease last_release;
static QemuAllocatorCounters counters;
static NotifierList release_notifiers =
    NOTIFIER_LIST_INITIALIZER(release_notifiers);

static int64_t idle_interval_ns = IDLE_INTERVAL_DEFAULT_MS * SCALE_MS;
static int64_t idle_last_ns;
/* Set once release_lock and release_cond are initialized */
static bool allocator_ready;

static void __attribute__((__constructor__)) allocator_init(void)
{
    qemu_mutex_init(&release_lock);
    qemu_cond_init(&release_cond);
    qatomic_store_release(&allocator_ready, true);
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

bool qemu_allocator_can_limit(void)
{
    return allocator_backend.can_limit;
}

void allocator_add_figure(QemuAllocatorStats *stats, const char *name,
                          uint64_t value)
{
    assert(stats->n_figures < QEMU_ALLOCATOR_MAX_FIGURES);
    stats->figures[stats->n_figures].name = name;
    stats->figures[stats->n_figures].value = value;
    stats->n_figures++;
}

void qemu_allocator_get_stats(QemuAllocatorStats *stats)
{
    memset(stats, 0, sizeof(*stats));
    stats->backend = allocator_backend.name;
    stats->rss = qemu_process_rss();
    if (allocator_backend.get_stats) {
        allocator_backend.get_stats(stats);
    }
}

/*
 * Wait until no release runs, then claim the right to run one.  Returns
 * false if a release that started after our arrival has completed without
 * a limit meanwhile: its result then answers our request too.
 */
static bool release_claim(uint64_t max_bytes, QemuAllocatorRelease *result)
{
    uint64_t first_useful;

    QEMU_LOCK_GUARD(&release_lock);
    /* Only a release that starts from now on sees what was freed so far */
    first_useful = releases_started + 1;
    while (release_running) {
        qemu_cond_wait(&release_cond, &release_lock);
    }
    if (releases_started >= first_useful && last_release_unlimited &&
        !max_bytes) {
        *result = last_release;
        result->shared = true;
        counters.shared++;
        return false;
    }
    release_running = true;
    releases_started++;
    return true;
}

/* Account for a release and let the next one run.  NULL: idle release. */
static void release_done(const QemuAllocatorRelease *result, bool unlimited,
                         int64_t duration_ns)
{
    QEMU_LOCK_GUARD(&release_lock);
    counters.time_ns += duration_ns;
    if (result) {
        last_release = *result;
        last_release_unlimited = unlimited;
        if (result->trigger == QEMU_ALLOCATOR_MANUAL) {
            counters.manual++;
        } else {
            counters.automatic++;
        }
        counters.returned += result->returned;
        counters.has_last = true;
        counters.last = *result;
    } else {
        counters.idle++;
    }
    release_running = false;
    qemu_cond_broadcast(&release_cond);
}

void qemu_allocator_get_counters(QemuAllocatorCounters *c)
{
    QEMU_LOCK_GUARD(&release_lock);
    *c = counters;
    c->running = release_running;
}

void qemu_allocator_add_release_notifier(Notifier *notifier)
{
    QEMU_LOCK_GUARD(&release_lock);
    notifier_list_add(&release_notifiers, notifier);
}

bool qemu_allocator_release(QemuAllocatorTrigger trigger, uint64_t max_bytes,
                            QemuAllocatorRelease *result, Error **errp)
{
    AllocatorSteps steps = { 0 };
    uint64_t returned;

    memset(result, 0, sizeof(*result));
    result->backend = allocator_backend.name;
    result->trigger = trigger;
    if (!allocator_backend.release) {
        error_setg(errp, "the memory allocator of this build (%s) cannot "
                   "return free memory to the OS", allocator_backend.name);
        return false;
    }
    if (max_bytes && !allocator_backend.can_limit) {
        error_setg(errp, "the %s allocator cannot limit how much a release "
                   "returns; release without a limit",
                   allocator_backend.name);
        return false;
    }
    if (!release_claim(max_bytes, result)) {
        return true;
    }

    result->rss_before = qemu_process_rss();
    result->start_ns = get_clock();
    returned = allocator_backend.release(max_bytes, &steps);
    result->duration_ns = get_clock() - result->start_ns;
    result->rss_after = qemu_process_rss();
    result->steps = steps.count;
    result->max_step_ns = steps.max_ns;
    if (returned == ALLOCATOR_RETURNED_UNKNOWN) {
        result->returned_from_rss = true;
        returned = result->rss_before > result->rss_after ?
                   result->rss_before - result->rss_after : 0;
    }
    result->returned = returned;

    /* What was just returned needs no idle-time release soon after */
    qatomic_set(&idle_last_ns, get_clock());
    release_done(result, !max_bytes, result->duration_ns);
    /* Listeners are only added at startup: no lock needed to walk them */
    notifier_list_notify(&release_notifiers, result);
    return true;
}

void qemu_allocator_set_idle_interval(int64_t interval_ms)
{
    assert(interval_ms >= 0 && interval_ms <= INT64_MAX / SCALE_MS);
    qatomic_set(&idle_interval_ns, interval_ms * SCALE_MS);
}

int64_t qemu_allocator_get_idle_interval(void)
{
    return qatomic_read(&idle_interval_ns) / SCALE_MS;
}

void qemu_allocator_idle(void)
{
    int64_t interval = qatomic_read(&idle_interval_ns);
    int64_t now = get_clock();

    /*
     * The RCU thread is started by a constructor too, and the order of
     * constructors is not defined: it may get here before allocator_init().
     */
    if (!qatomic_load_acquire(&allocator_ready)) {
        return;
    }
    if (!allocator_backend.idle || !interval ||
        now - qatomic_read(&idle_last_ns) < interval) {
        return;
    }
    /* The RCU thread must not wait for a long release: skip instead */
    WITH_QEMU_LOCK_GUARD(&release_lock) {
        if (release_running) {
            return;
        }
        release_running = true;
    }
    qatomic_set(&idle_last_ns, now);
    allocator_backend.idle();
    release_done(NULL, false, get_clock() - now);
}
