/*
 * Automatic release of free allocator memory, e.g. after backups
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A backup leaves up to gigabytes of bounce buffers cached in the
 * allocator.  Once it is over, QEMU returns them by itself: requests are
 * collected for a moment, so that the N jobs of a transaction, or jobs
 * that end close together, lead to one release, which then runs in a
 * worker thread, away from the main loop and the big QEMU lock.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "block/thread-pool.h"
#include "qemu/atomic.h"
#include "qemu/cutils.h"
#include "qemu/lockable.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "allocator-int.h"

/*
 * Requests this close together lead to one release: the jobs of one
 * backup run rarely end further apart.
 */
#define DEBOUNCE_MS 1000

static bool release_after_backup = true;
static uint64_t min_releasable = 4 * MiB;

/* Main loop only */
static QEMUTimer *debounce_timer;
static bool requested;
static bool worker_busy;
/* requested or worker_busy; read by any thread */
static bool pending;

static QemuMutex skip_lock;
static uint64_t skipped;
static char last_skip[128];

static void __attribute__((__constructor__)) allocator_auto_init(void)
{
    qemu_mutex_init(&skip_lock);
}

void qemu_allocator_set_release_after_backup(bool on)
{
    qatomic_set(&release_after_backup, on);
}

bool qemu_allocator_get_release_after_backup(void)
{
    return qatomic_read(&release_after_backup);
}

void qemu_allocator_set_min_releasable(uint64_t bytes)
{
    qatomic_set(&min_releasable, bytes);
}

uint64_t qemu_allocator_get_min_releasable(void)
{
    return qatomic_read(&min_releasable);
}

bool qemu_allocator_release_pending(void)
{
    return qatomic_read(&pending);
}

uint64_t qemu_allocator_get_skipped(char *reason, size_t len)
{
    QEMU_LOCK_GUARD(&skip_lock);
    if (reason) {
        pstrcpy(reason, len, last_skip);
    }
    return skipped;
}

static void G_GNUC_PRINTF(1, 2) note_skip(const char *fmt, ...)
{
    va_list ap;

    QEMU_LOCK_GUARD(&skip_lock);
    skipped++;
    va_start(ap, fmt);
    vsnprintf(last_skip, sizeof(last_skip), fmt, ap);
    va_end(ap);
}

/* In a worker thread: decide on fresh statistics, then release */
static int auto_release_work(void *opaque)
{
    QemuAllocatorStats stats;
    QemuAllocatorRelease result;
    uint64_t min = qatomic_read(&min_releasable);

    qemu_allocator_get_stats(&stats);
    if (allocator_backend.get_stats && stats.releasable < min) {
        note_skip("%" PRIu64 " bytes releasable, below the minimum of %"
                  PRIu64, stats.releasable, min);
        return 0;
    }
    qemu_allocator_release(QEMU_ALLOCATOR_AUTOMATIC, 0, &result, NULL);
    return 0;
}

static void debounce_expired(void *opaque);

static void update_pending(void)
{
    qatomic_set(&pending, requested || worker_busy);
}

static void auto_release_done(void *opaque, int ret)
{
    worker_busy = false;
    /* A request that expired while the worker ran is served now */
    if (requested && !timer_pending(debounce_timer)) {
        debounce_expired(NULL);
    }
    update_pending();
}

static void debounce_expired(void *opaque)
{
    if (worker_busy) {
        return;     /* auto_release_done() comes back here */
    }
    requested = false;
    if (!qatomic_read(&release_after_backup)) {
        note_skip("automatic release is disabled by the policy");
    } else {
        worker_busy = true;
        thread_pool_submit_aio(auto_release_work, NULL, auto_release_done,
                               NULL);
    }
    update_pending();
}

void qemu_allocator_release_soon(void)
{
    GLOBAL_STATE_CODE();

    if (!allocator_backend.release) {
        return;
    }
    if (!debounce_timer) {
        debounce_timer = timer_new_ms(QEMU_CLOCK_REALTIME, debounce_expired,
                                      NULL);
    }
    requested = true;
    update_pending();
    timer_mod(debounce_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + DEBOUNCE_MS);
}
