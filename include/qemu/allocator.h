/*
 * Return free memory of the memory allocator to the OS, read its statistics
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The same calls work whatever allocator the build links (the meson option
 * "malloc": glibc's malloc, tcmalloc or jemalloc).  Allocators keep memory
 * that the program has freed, so that after a burst of I/O or a backup the
 * process's RSS stays high; these functions give it back and say how much
 * there is to give back.
 */

#ifndef QEMU_ALLOCATOR_H
#define QEMU_ALLOCATOR_H

#include "qemu/notify.h"

#define QEMU_ALLOCATOR_MAX_FIGURES 8

/* Who asked for a release. */
typedef enum QemuAllocatorTrigger {
    QEMU_ALLOCATOR_MANUAL,      /* a user, through the monitor */
    QEMU_ALLOCATOR_AUTOMATIC,   /* QEMU itself, e.g. after a backup */
} QemuAllocatorTrigger;

/*
 * One of the allocator's own statistics, under the allocator's own name:
 * bytes, or a count if the name ends in "-count".
 */
typedef struct QemuAllocatorFigure {
    const char *name;
    uint64_t value;
} QemuAllocatorFigure;

/*
 * Statistics in bytes, with the same meaning for every allocator:
 *
 * @allocated:  in use by the program
 * @held:       resident memory the allocator holds: @allocated + @free
 * @free:       held by the allocator but not in use (caches, free lists,
 *              fragments between live objects)
 * @releasable: the part of @free that a release can return to the OS now
 * @returned:   already returned to the OS, address space kept for reuse;
 *              only valid if @has_returned (glibc does not count it)
 * @rss:        the process's resident set size, from /proc
 *
 * Allocators compute their figures at slightly different moments, so the
 * sums are approximate under concurrent allocation.  glibc does not know
 * which of its free pages it already gave back: there @free and
 * @releasable are estimates, exact right after a release, and too high
 * rather than too low later.
 */
typedef struct QemuAllocatorStats {
    const char *backend;
    uint64_t allocated;
    uint64_t held;
    uint64_t free;
    uint64_t releasable;
    bool has_returned;
    uint64_t returned;
    uint64_t rss;
    unsigned int n_figures;
    QemuAllocatorFigure figures[QEMU_ALLOCATOR_MAX_FIGURES];
} QemuAllocatorStats;

/*
 * What one release did.
 *
 * @returned:      bytes returned to the OS; the allocator's own count, or
 *                 the drop of RSS if @returned_from_rss (glibc)
 * @rss_before, @rss_after: process RSS around the release
 * @start_ns:      when the release started (get_clock() time base)
 * @duration_ns:   how long it took
 * @steps:         number of bounded steps it was done in
 * @max_step_ns:   the longest step: the longest time other threads could
 *                 have waited for the allocator because of this release
 * @trigger:       who asked for it
 * @shared:        another caller's release, which started after this call
 *                 was made, did the work and this is its result
 */
typedef struct QemuAllocatorRelease {
    const char *backend;
    QemuAllocatorTrigger trigger;
    uint64_t returned;
    bool returned_from_rss;
    uint64_t rss_before;
    uint64_t rss_after;
    int64_t start_ns;
    int64_t duration_ns;
    unsigned int steps;
    int64_t max_step_ns;
    bool shared;
} QemuAllocatorRelease;

/**
 * qemu_allocator_name:
 *
 * Returns: the allocator this build uses: "glibc", "tcmalloc", "jemalloc",
 * or "system" for a C library whose allocator offers neither statistics
 * nor release.
 */
const char *qemu_allocator_name(void);

/**
 * qemu_allocator_can_release:
 *
 * Returns: true if qemu_allocator_release() can work in this build.
 */
bool qemu_allocator_can_release(void);

/**
 * qemu_allocator_can_limit:
 *
 * Returns: true if qemu_allocator_release() honours @max_bytes.
 */
bool qemu_allocator_can_limit(void);

/**
 * qemu_allocator_get_stats:
 * @stats: filled in
 *
 * Take one snapshot of the allocator's statistics.  Cheap enough to be
 * polled; callable from any thread.  Where the allocator has no statistics
 * only @backend and @rss are set.
 */
void qemu_allocator_get_stats(QemuAllocatorStats *stats);

/*
 * What releases have done since QEMU started.
 *
 * @manual, @automatic: releases run for each trigger
 * @idle:       idle-time releases of the RCU thread
 * @shared:     requests answered by a release that another caller ran
 * @returned:   bytes returned by manual and automatic releases
 * @time_ns:    time spent in all of them, idle-time releases included
 * @last:       the last manual or automatic release, if @has_last
 * @running:    a release is running now
 */
typedef struct QemuAllocatorCounters {
    uint64_t manual;
    uint64_t automatic;
    uint64_t idle;
    uint64_t shared;
    uint64_t returned;
    int64_t time_ns;
    bool has_last;
    QemuAllocatorRelease last;
    bool running;
} QemuAllocatorCounters;

/**
 * qemu_allocator_get_counters:
 * @counters: filled in
 */
void qemu_allocator_get_counters(QemuAllocatorCounters *counters);

/**
 * qemu_allocator_add_release_notifier:
 * @notifier: called with a const QemuAllocatorRelease * after each manual
 *            or automatic release, in the thread that ran it, with no
 *            lock held
 *
 * Not for requests answered by another caller's release: each release is
 * notified once.
 */
void qemu_allocator_add_release_notifier(Notifier *notifier);

/**
 * qemu_allocator_release:
 * @trigger: who asks
 * @max_bytes: stop once this many bytes have been returned; 0: no limit.
 *             Only where qemu_allocator_can_limit().
 * @result: filled in with what was done
 * @errp: error object
 *
 * Return free allocator memory to the OS.  This can take tens of
 * milliseconds on a large heap: do not call it with the BQL held or from
 * the main loop.  Where the allocator allows, the work is done in bounded
 * steps so that other threads wait at most one step for the allocator.
 *
 * Releases never run in parallel.  A caller that arrives while a release
 * runs waits; if another release started after its arrival and finished
 * without a limit, the caller gets that result (marked @shared) instead of
 * doing the same work again.
 *
 * Returns: true on success, false with @errp set if the allocator cannot
 * release memory or cannot honour @max_bytes.
 */
bool qemu_allocator_release(QemuAllocatorTrigger trigger, uint64_t max_bytes,
                            QemuAllocatorRelease *result, Error **errp);

/**
 * qemu_allocator_idle:
 *
 * Called by the RCU thread whenever it becomes idle: give back memory the
 * way the allocator suits best, at most once per idle interval (see
 * qemu_allocator_set_idle_interval()).  Never waits for a release that
 * runs in another thread; skips instead.
 */
void qemu_allocator_idle(void);

/**
 * qemu_allocator_set_idle_interval:
 * @interval_ms: minimum time between two idle-time releases; 0 disables
 *               them
 */
void qemu_allocator_set_idle_interval(int64_t interval_ms);
int64_t qemu_allocator_get_idle_interval(void);

/**
 * qemu_allocator_release_soon:
 *
 * Ask for an automatic release, e.g. because a backup ended.  Requests
 * made within a moment of each other lead to one release, which runs in a
 * worker thread if the policy allows it (see
 * qemu_allocator_set_release_after_backup()) and at least
 * qemu_allocator_get_min_releasable() bytes can be returned.  Main loop
 * only.
 */
void qemu_allocator_release_soon(void);

/* The policy for automatic releases; any thread. */
void qemu_allocator_set_release_after_backup(bool on);
bool qemu_allocator_get_release_after_backup(void);
void qemu_allocator_set_min_releasable(uint64_t bytes);
uint64_t qemu_allocator_get_min_releasable(void);

/**
 * qemu_allocator_release_pending:
 *
 * Returns: true while an automatic release is requested or running.
 */
bool qemu_allocator_release_pending(void);

/**
 * qemu_allocator_get_skipped:
 * @reason: if not NULL, filled in with why the last one was skipped
 * @len: size of @reason
 *
 * Returns: how many automatic releases were skipped, by the policy or
 * because too little was releasable.
 */
uint64_t qemu_allocator_get_skipped(char *reason, size_t len);

/**
 * qemu_process_rss:
 *
 * Returns: the resident set size of this process in bytes, 0 if unknown.
 */
uint64_t qemu_process_rss(void);

#endif
