/*
 * How well does a release return a fragmented heap, how fast, how long
 * does it make other threads wait, and what does a statistics read cost?
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Built by bench/release-bench.sh against the libqemuutil of each QEMU
 * build variant, so it measures qemu_allocator_release() and
 * qemu_allocator_get_stats() with the allocator that variant links.
 *
 * Release mode (the default), one run, one fresh heap:
 *
 *   1. THREADS threads allocate --mib MiB in 16..4096 byte objects, touch
 *      them, free 63 of every 64, and exit;
 *   2. with --probe, a probe thread loops malloc/touch/free of 4..256 KiB
 *      blocks and records its slowest operation, first without a release
 *      (idle_stall_ms), then during it (stall_ms);
 *   3. qemu_allocator_get_stats() is timed STATS_SAMPLES times;
 *   4. the release runs (through the API, or --oneshot: the allocator's
 *      single call, as callers did before the API existed);
 *   5. the kernel's floor: one madvise(MADV_DONTNEED) over as many freshly
 *      touched bytes as the release returned.
 *
 * v1 printed the API's number of steps and its longest step; the v2 API
 * reports neither (tcmalloc's release still goes in 2 MiB steps and
 * jemalloc's one arena at a time, but the result does not say how many or
 * how long), so they are gone: what other threads wait is measured by the
 * probe instead.  The RCU
 * thread's idle-time release cannot be switched off in v2, nor does v2
 * count it: the thread does one as the program starts (it has no
 * callbacks yet), which is waited for before the workload; this program
 * makes no call_rcu(), so no other should run.  The allocator calls that
 * idle-time releases make from other threads are counted (see
 * count_release_call()) and printed as idle_release_calls, so one that
 * did run shows (one call per idle-time release with glibc and jemalloc,
 * one per 2 MiB step with tcmalloc).
 *
 * Statistics mode (--stats-cost=SIZE): one thread allocates --mib MiB
 * (default 1024) in objects of SIZE bytes, touches them, frees every other
 * one, then times --reads reads of qemu_allocator_get_stats() on that
 * heap (glibc's mallinfo2() walks every free chunk).
 *
 * Prints one line of key=value figures; "na" where the allocator does not
 * know a figure.
 */

#include "qemu/osdep.h"
#include <dlfcn.h>
#include "qapi/error.h"
#include "qemu/allocator.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#ifdef CONFIG_TCMALLOC
#include <gperftools/malloc_extension_c.h>
#endif
#ifdef CONFIG_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#ifdef CONFIG_MALLOC_TRIM
#include <malloc.h>
#endif

#define THREADS 8
#define KEEP_ONE_IN 64

typedef struct Fragmenter {
    QemuThread thread;
    uint64_t bytes;
    guint32 seed;
    GPtrArray *kept;
    uint64_t freed;
    uint64_t kept_bytes;
} Fragmenter;

typedef struct Probe {
    QemuThread thread;
    bool stop;
    bool measuring;
    int64_t worst_ns;
    uint64_t ops;
} Probe;

static void *fragment(void *opaque)
{
    Fragmenter *f = opaque;
    g_autoptr(GRand) rand = g_rand_new_with_seed(f->seed);
    g_autoptr(GArray) sizes = g_array_new(false, false, sizeof(size_t));
    uint64_t done = 0;
    guint i;

    f->kept = g_ptr_array_new();
    while (done < f->bytes) {
        size_t size = g_rand_int_range(rand, 16, 4097);
        char *p = g_malloc(size);

        memset(p, 0xa5, size);
        g_ptr_array_add(f->kept, p);
        g_array_append_val(sizes, size);
        done += size;
    }
    /* Drop most of it at once, like a cache or a finished job would */
    for (i = 0; i < f->kept->len; i++) {
        if (i % KEEP_ONE_IN) {
            f->freed += g_array_index(sizes, size_t, i);
            g_free(f->kept->pdata[i]);
            f->kept->pdata[i] = NULL;
        } else {
            f->kept_bytes += g_array_index(sizes, size_t, i);
        }
    }
    return NULL;
}

static void *probe_run(void *opaque)
{
    Probe *p = opaque;
    g_autoptr(GRand) rand = g_rand_new_with_seed(99);

    while (!qatomic_read(&p->stop)) {
        size_t size = g_rand_int_range(rand, 4 * KiB, 256 * KiB + 1);
        int64_t t0 = get_clock();
        char *b = g_malloc(size);

        b[0] = 1;
        b[size - 1] = 1;
        g_free(b);
        if (qatomic_read(&p->measuring)) {
            p->worst_ns = MAX(p->worst_ns, get_clock() - t0);
            p->ops++;
        }
    }
    return NULL;
}

static int64_t madvise_floor_ns(uint64_t bytes)
{
    size_t len = ROUND_UP(MAX(bytes, 4 * KiB), qemu_real_host_page_size());
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int64_t t0;

    g_assert(m != MAP_FAILED);
    memset(m, 0x5a, len);
    t0 = get_clock();
    g_assert(madvise(m, len, MADV_DONTNEED) == 0);
    t0 = get_clock() - t0;
    munmap(m, len);
    return t0;
}

static void oneshot_release(void)
{
#if defined(CONFIG_TCMALLOC)
    MallocExtension_ReleaseFreeMemory();
#elif defined(CONFIG_JEMALLOC)
    mallctl("arena." stringify(MALLCTL_ARENAS_ALL) ".purge", NULL, NULL,
            NULL, 0);
#elif defined(CONFIG_MALLOC_TRIM)
    malloc_trim(0);
#endif
}

#define STATS_SAMPLES 1000

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* "na" where the allocator does not know a figure */
static const char *opt_mib(bool has, uint64_t bytes, char *buf, size_t len)
{
    if (!has) {
        return "na";
    }
    snprintf(buf, len, "%.1f", bytes / (double)MiB);
    return buf;
}

static const char *opt_ms(bool has, int64_t ns, char *buf, size_t len)
{
    if (!has) {
        return "na";
    }
    snprintf(buf, len, "%.2f", ns / 1e6);
    return buf;
}

/*
 * The RCU thread's idle-time releases.  v2 counts them nowhere (the API's
 * counters have manual and automatic releases only), so this program
 * counts the allocator calls they are made of: malloc_trim() (glibc),
 * mallctl("arena.<i>.decay" or ".purge") (jemalloc) and
 * MallocExtension_ReleaseToSystem() (tcmalloc), made by a thread other
 * than the main thread, which is the only thread that releases here.  The
 * definitions below take the place of the library's for libqemuutil's
 * calls and pass them on to it (dlsym(RTLD_NEXT)).
 */
static pthread_t main_thread;
static bool main_thread_known;
static uint64_t other_thread_release_calls;

static void count_release_call(void)
{
    if (!qatomic_read(&main_thread_known) ||
        !pthread_equal(pthread_self(), main_thread)) {
        qatomic_inc(&other_thread_release_calls);
    }
}

#if defined(CONFIG_MALLOC_TRIM)
int malloc_trim(size_t pad)
{
    static int (*real)(size_t);

    if (!real) {
        real = dlsym(RTLD_NEXT, "malloc_trim");
    }
    count_release_call();
    return real(pad);
}
#elif defined(CONFIG_JEMALLOC)
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
            size_t newlen)
{
    static int (*real)(const char *, void *, size_t *, void *, size_t);

    if (!real) {
        real = dlsym(RTLD_NEXT, "mallctl");
    }
    if (g_str_has_prefix(name, "arena.") &&
        (g_str_has_suffix(name, ".decay") ||
         g_str_has_suffix(name, ".purge"))) {
        count_release_call();
    }
    return real(name, oldp, oldlenp, newp, newlen);
}
#elif defined(CONFIG_TCMALLOC)
void MallocExtension_ReleaseToSystem(size_t num_bytes)
{
    static void (*real)(size_t);

    if (!real) {
        real = dlsym(RTLD_NEXT, "MallocExtension_ReleaseToSystem");
    }
    count_release_call();
    real(num_bytes);
}
#endif

static uint64_t idle_releases(void)
{
    return qatomic_read(&other_thread_release_calls);
}

/*
 * The RCU thread starts with no callbacks, so it does one idle-time
 * release as the program starts (where the allocator has one): let it
 * happen before the workload (200 ms at most), so that idle_release_calls
 * counts only the ones that ran during the measurement.
 */
static uint64_t wait_startup_idle_release(void)
{
    int i;

    main_thread = pthread_self();
    qatomic_set(&main_thread_known, true);
    for (i = 0; i < 200 && !idle_releases(); i++) {
        g_usleep(1000);
    }
    return idle_releases();
}

/*
 * The cost of one statistics read on a heap of @mib MiB in @size byte
 * objects of which every other one is free.
 */
static int stats_cost(uint64_t size, uint64_t mib, int reads)
{
    uint64_t count = mib * MiB / size, i;
    uint64_t idle0 = wait_startup_idle_release();
    uint64_t rss_start = qemu_process_rss(), rss_heap;
    /* The pointers live outside the allocator, so they do not count */
    size_t plen = ROUND_UP(count * sizeof(void *), qemu_real_host_page_size());
    void **ptrs = mmap(NULL, plen, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_autofree int64_t *ns = g_new(int64_t, reads);
    QemuAllocatorStats st = { 0 };
    bool has_stats = true;
    int64_t t0, fill_ns;
    char b1[32], b2[32];
    int r;

    g_assert(ptrs != MAP_FAILED);
    t0 = get_clock();
    for (i = 0; i < count; i++) {
        ptrs[i] = g_malloc(size);
        memset(ptrs[i], 0xa5, size);
    }
    for (i = 1; i < count; i += 2) {
        g_free(ptrs[i]);
        ptrs[i] = NULL;
    }
    fill_ns = get_clock() - t0;
    rss_heap = qemu_process_rss();

    for (r = 0; r < reads; r++) {
        t0 = get_clock();
        has_stats = qemu_allocator_get_stats(&st);
        ns[r] = get_clock() - t0;
    }
    qsort(ns, reads, sizeof(ns[0]), cmp_i64);

    printf("backend=%s mode=stats-cost object_bytes=%" PRIu64
           " heap_mib=%" PRIu64 " objects=%" PRIu64 " freed_objects=%" PRIu64
           " rss_start_mib=%.1f rss_heap_mib=%.1f fill_s=%.2f"
           " has_stats=%d allocated_mib=%.1f free_mib=%.1f"
           " releasable_mib=%s returned_mib=%s reads=%d"
           " stats_median_ms=%.3f stats_min_ms=%.3f stats_max_ms=%.3f"
           " startup_idle_release_calls=%" PRIu64
           " idle_release_calls=%" PRIu64 "\n",
           qemu_allocator_name(), size, mib, count, count / 2,
           rss_start / (double)MiB, rss_heap / (double)MiB, fill_ns / 1e9,
           has_stats, st.allocated / (double)MiB, st.free / (double)MiB,
           opt_mib(st.has_releasable, st.releasable, b1, sizeof(b1)),
           opt_mib(st.has_returned, st.returned, b2, sizeof(b2)), reads,
           ns[reads / 2] / 1e6, ns[0] / 1e6, ns[reads - 1] / 1e6,
           idle0, idle_releases() - idle0);

    for (i = 0; i < count; i += 2) {
        g_free(ptrs[i]);
    }
    munmap(ptrs, plen);
    return 0;
}

int main(int argc, char **argv)
{
    static int64_t stats_ns[STATS_SAMPLES];
    gint64 mib = 0;
    gint64 object_size = 0;
    gint reads = 9;
    gboolean oneshot = false;
    gboolean with_probe = false;
    GOptionEntry entries[] = {
        { "mib", 0, 0, G_OPTION_ARG_INT64, &mib,
          "MiB the workload allocates (default 400; 1024 with "
          "--stats-cost)", "N" },
        { "oneshot", 0, 0, G_OPTION_ARG_NONE, &oneshot,
          "release with the allocator's single call, not the API", NULL },
        { "probe", 0, 0, G_OPTION_ARG_NONE, &with_probe,
          "run a thread that allocates during the release, report its "
          "slowest malloc/free", NULL },
        { "stats-cost", 0, 0, G_OPTION_ARG_INT64, &object_size,
          "only time qemu_allocator_get_stats() on a heap of SIZE byte "
          "objects, every other one free", "SIZE" },
        { "reads", 0, 0, G_OPTION_ARG_INT, &reads,
          "statistics reads with --stats-cost (default 9)", "N" },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "- measure qemu_allocator_release() on a fragmented heap");
    g_autoptr(GError) gerr = NULL;
    Fragmenter frag[THREADS];
    QemuAllocatorStats before, after;
    QemuAllocatorRelease r = { 0 };
    Probe probe = { 0 };
    uint64_t freed_bytes = 0, kept_bytes = 0, rss_start, rss_before;
    uint64_t rss_after, returned, cached, idle0;
    int64_t t0, duration, floor_ns, idle_worst = 0;
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    bool has_stats;
    int i;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        g_printerr("release-bench: %s\n", gerr->message);
        return 2;
    }
    if (!mib) {
        mib = object_size ? 1024 : 400;
    }
    if (mib < 8 || mib > 16384) {
        g_printerr("release-bench: --mib must be 8..16384\n");
        return 2;
    }
    if (object_size) {
        if (object_size < 8 || object_size > 1024 * 1024) {
            g_printerr("release-bench: --stats-cost must be 8..1048576\n");
            return 2;
        }
        if (reads < 1 || reads > 10000) {
            g_printerr("release-bench: --reads must be 1..10000\n");
            return 2;
        }
        return stats_cost(object_size, mib, reads);
    }

    idle0 = wait_startup_idle_release();
    rss_start = qemu_process_rss();
    for (i = 0; i < THREADS; i++) {
        frag[i] = (Fragmenter) { .bytes = mib * MiB / THREADS,
                                 .seed = 1000 + i };
        qemu_thread_create(&frag[i].thread, "fragment", fragment, &frag[i],
                           QEMU_THREAD_JOINABLE);
    }
    for (i = 0; i < THREADS; i++) {
        qemu_thread_join(&frag[i].thread);
        freed_bytes += frag[i].freed;
        kept_bytes += frag[i].kept_bytes;
    }

    if (with_probe) {
        /* Probe alone first: its slowest operation without any release */
        qemu_thread_create(&probe.thread, "probe", probe_run, &probe,
                           QEMU_THREAD_JOINABLE);
        g_usleep(20 * 1000);
        qatomic_set(&probe.measuring, true);
        g_usleep(100 * 1000);
        qatomic_set(&probe.measuring, false);
        idle_worst = probe.worst_ns;
        probe.worst_ns = 0;
        probe.ops = 0;
    }

    /* What a stats query costs on this heap, without QMP around it */
    for (i = 0; i < STATS_SAMPLES; i++) {
        t0 = get_clock();
        qemu_allocator_get_stats(&before);
        stats_ns[i] = get_clock() - t0;
    }
    qsort(stats_ns, STATS_SAMPLES, sizeof(stats_ns[0]), cmp_i64);
    has_stats = qemu_allocator_get_stats(&before);
    rss_before = qemu_process_rss();
    qatomic_set(&probe.measuring, true);
    t0 = get_clock();
    if (oneshot) {
        oneshot_release();
    } else if (!qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &r,
                                       &error_abort)) {
        return 1;
    }
    duration = get_clock() - t0;
    qatomic_set(&probe.measuring, false);
    rss_after = qemu_process_rss();
    if (with_probe) {
        qatomic_set(&probe.stop, true);
        qemu_thread_join(&probe.thread);
    }
    qemu_allocator_get_stats(&after);

    returned = rss_before > rss_after ? rss_before - rss_after : 0;
    /*
     * What the allocator still caches: RSS above what the process had
     * before the workload plus what the workload kept alive.  Allocators
     * that returned part of the freed memory by themselves cache less.
     */
    cached = rss_before - MIN(rss_before, rss_start + kept_bytes);
    floor_ns = madvise_floor_ns(returned);

    /* STATS_SAMPLES >= 100: a p99 means something */
    printf("backend=%s mode=%s%s workload_mib=%" PRId64
           " freed_mib=%.1f has_stats=%d free_before_mib=%.1f"
           " releasable_before_mib=%s"
           " rss_before_mib=%.1f rss_after_mib=%.1f returned_mib=%.1f"
           " api_returned_mib=%s cached_mib=%.1f returned_pct=%.1f"
           " release_ms=%.2f floor_ms=%.2f"
           " stall_ms=%s idle_stall_ms=%s probe_ops=%" PRIu64
           " left_free_mib=%.1f left_releasable_mib=%s"
           " stats_samples=%d stats_p50_us=%.1f stats_p99_us=%.1f"
           " startup_idle_release_calls=%" PRIu64
           " idle_release_calls=%" PRIu64 "\n",
           qemu_allocator_name(), oneshot ? "oneshot" : "api",
           with_probe ? "+probe" : "", mib,
           freed_bytes / (double)MiB, has_stats, before.free / (double)MiB,
           opt_mib(before.has_releasable, before.releasable, b1, sizeof(b1)),
           rss_before / (double)MiB, rss_after / (double)MiB,
           returned / (double)MiB,
           opt_mib(!oneshot && r.has_returned, r.returned, b2, sizeof(b2)),
           cached / (double)MiB, 100.0 * returned / MAX(cached, 1),
           duration / 1e6, floor_ns / 1e6,
           opt_ms(with_probe, probe.worst_ns, b4, sizeof(b4)),
           opt_ms(with_probe, idle_worst, b5, sizeof(b5)),
           probe.ops, after.free / (double)MiB,
           opt_mib(after.has_releasable, after.releasable, b3, sizeof(b3)),
           STATS_SAMPLES, stats_ns[STATS_SAMPLES / 2] / 1e3,
           stats_ns[STATS_SAMPLES * 99 / 100] / 1e3,
           idle0, idle_releases() - idle0);
    return 0;
}
