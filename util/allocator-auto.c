/*
 * Automatic release of free allocator memory after backups
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A backup job copies through block-copy, which keeps up to
 * BLOCK_COPY_MAX_MEM (128 MiB) of bounce buffers in flight per job.  When
 * the job ends they are freed, and the allocator keeps them, with the
 * job's other allocations.  QEMU returns them by itself rather than
 * leaving it to management, which would have to watch every job of every
 * VM and send a command for each: QEMU knows when a job's buffers are
 * freed, and can serve several jobs with one release.  Requests are
 * collected for a moment, so that the jobs of a transaction, or jobs that
 * end close together, lead to one release, which then runs in a worker
 * thread, without the big QEMU lock.
 *
 * The request comes from the backup job's .clean: the copy-before-write
 * filter used alone (fleecing, pull-mode backup) does not make one.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "block/thread-pool.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "allocator-int.h"

/* The jobs of one backup rarely end further apart */
#define DEBOUNCE_MS 1000
/* ... but jobs that keep ending must not put the release off forever */
#define DEBOUNCE_MAX_MS 10000

/* Main loop only */
static QEMUTimer *debounce_timer;
static bool requested;
static int64_t first_request_ms;
static bool worker_busy;

static int auto_release_work(void *opaque)
{
    QemuAllocatorRelease result;

    qemu_allocator_release(QEMU_ALLOCATOR_AUTOMATIC, &result, NULL);
    return 0;
}

static void debounce_expired(void *opaque);

static void auto_release_done(void *opaque, int ret)
{
    worker_busy = false;
    /* A request whose moment passed while the worker ran is served now */
    if (requested && !timer_pending(debounce_timer)) {
        debounce_expired(NULL);
    }
}

static void debounce_expired(void *opaque)
{
    if (worker_busy) {
        return;     /* auto_release_done() comes back here */
    }
    requested = false;
    worker_busy = true;
    thread_pool_submit_aio(auto_release_work, NULL, auto_release_done, NULL);
}

void qemu_allocator_release_soon(void)
{
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    GLOBAL_STATE_CODE();

    if (!allocator_backend.release) {
        return;
    }
    if (!debounce_timer) {
        debounce_timer = timer_new_ms(QEMU_CLOCK_REALTIME, debounce_expired,
                                      NULL);
    }
    if (!requested) {
        requested = true;
        first_request_ms = now;
    }
    timer_mod(debounce_timer, MIN(now + DEBOUNCE_MS,
                                  first_request_ms + DEBOUNCE_MAX_MS));
}
