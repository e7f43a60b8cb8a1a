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

/*
 * Statistics in bytes, with the same meaning for every allocator that has
 * them, but for glibc's @free:
 *
 * @allocated:  in use by the program
 * @free:       held by the allocator but not in use (caches, free lists,
 *              fragments between live objects); glibc also counts pages
 *              it has already returned here
 * @releasable: the part of @free a release can return now, if
 *              @has_releasable
 * @returned:   returned to the OS with the address space kept for reuse,
 *              if @has_returned
 *
 * The figures are read at slightly different moments, so they do not add
 * up exactly while other threads allocate.
 */
typedef struct QemuAllocatorStats {
    uint64_t allocated;
    uint64_t free;
    bool has_releasable;
    uint64_t releasable;
    bool has_returned;
    uint64_t returned;
} QemuAllocatorStats;

/* Who asked for a release. */
typedef enum QemuAllocatorTrigger {
    QEMU_ALLOCATOR_MANUAL,      /* a user, through the monitor */
    QEMU_ALLOCATOR_AUTOMATIC,   /* QEMU itself, after a backup */
} QemuAllocatorTrigger;

/*
 * What one release did.
 *
 * @returned:      bytes the allocator returned, if @has_returned
 * @rss_before, @rss_after: the process's RSS around the release; 0 if
 *                 unknown
 * @start_ns:      when it started (get_clock())
 * @duration_ns:   how long it took
 */
typedef struct QemuAllocatorRelease {
    QemuAllocatorTrigger trigger;
    bool has_returned;
    uint64_t returned;
    uint64_t rss_before;
    uint64_t rss_after;
    int64_t start_ns;
    int64_t duration_ns;
} QemuAllocatorRelease;

/*
 * What releases have done since QEMU started.
 *
 * @manual, @automatic: releases run for each trigger
 * @running:    a release is running now
 * @last:       the last release, if @has_last
 */
typedef struct QemuAllocatorCounters {
    uint64_t manual;
    uint64_t automatic;
    bool running;
    bool has_last;
    QemuAllocatorRelease last;
} QemuAllocatorCounters;

/**
 * qemu_allocator_name:
 *
 * Returns: the allocator of this build: "glibc", "tcmalloc", "jemalloc",
 * or "system" for one QEMU has no backend for (no glibc, no malloc_trim,
 * or a sanitizer's malloc): neither statistics nor a way to return memory.
 */
const char *qemu_allocator_name(void);

/**
 * qemu_allocator_can_release:
 *
 * Returns: true if qemu_allocator_release() can work in this build.
 */
bool qemu_allocator_can_release(void);

/**
 * qemu_allocator_get_stats:
 * @stats: filled in
 *
 * Read the allocator's statistics; any thread.  With glibc this walks
 * every free chunk of the heap (about 100 ms on a fragmented GiB): do not
 * call it from the main loop.
 *
 * Returns: false if the allocator has no statistics.
 */
bool qemu_allocator_get_stats(QemuAllocatorStats *stats);

/**
 * qemu_allocator_stats_walk_heap:
 *
 * Returns: true if qemu_allocator_get_stats() walks the heap (glibc), false
 * if it reads a few counters (tcmalloc, jemalloc) and may be called from
 * the main loop.
 */
bool qemu_allocator_stats_walk_heap(void);

/**
 * qemu_allocator_release:
 * @trigger: who asks
 * @result: filled in with what was done
 * @errp: error object
 *
 * Return free allocator memory to the OS.  This takes up to tens of
 * milliseconds on a large heap: do not call it from the main loop or with
 * the BQL held.  Releases run one at a time: a caller that arrives while
 * one runs waits for it.
 *
 * Returns: false with @errp set if the allocator cannot return memory.
 */
bool qemu_allocator_release(QemuAllocatorTrigger trigger,
                            QemuAllocatorRelease *result, Error **errp);

/**
 * qemu_allocator_release_soon:
 *
 * Ask for an automatic release, e.g. because a backup ended.  Requests
 * made within a second of each other lead to one release, which runs in
 * the thread pool.  Main loop only.
 */
void qemu_allocator_release_soon(void);

/**
 * qemu_allocator_idle:
 *
 * Called by the RCU thread whenever it runs out of callbacks.  With glibc,
 * malloc_trim() keeping 4 MiB, as the RCU thread always did; with jemalloc,
 * its decay, which an idle process otherwise never applies; nothing with
 * tcmalloc, whose own release rate applies.  Never waits for a release
 * that runs in another thread.
 */
void qemu_allocator_idle(void);

/**
 * qemu_allocator_get_counters:
 * @counters: filled in
 */
void qemu_allocator_get_counters(QemuAllocatorCounters *counters);

/**
 * qemu_allocator_add_release_notifier:
 * @notifier: called with a const QemuAllocatorRelease * after each
 *            release (not idle-time ones), in the thread that ran it,
 *            in the order the releases ran
 *
 * A notifier runs before the next release can start: keep it short, and
 * never release from it.  Add notifiers before anything can release, e.g.
 * from module init.
 */
void qemu_allocator_add_release_notifier(Notifier *notifier);

/**
 * qemu_process_rss:
 *
 * Returns: the resident set size of this process in bytes, 0 if unknown.
 */
uint64_t qemu_process_rss(void);

#endif
