/*
 * How well does a release return a fragmented heap, how fast, and how long
 * does it make other threads wait?
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Built by bench/release-bench.sh against the libqemuutil of each QEMU
 * build variant, so it measures qemu_allocator_release() with the
 * allocator that variant links.  One run, one fresh heap:
 *
 *   1. THREADS threads allocate --mib MiB in 16..4096 byte objects, touch
 *      them, free 63 of every 64, and exit;
 *   2. a probe thread loops malloc/touch/free of 4..256 KiB blocks and
 *      records its slowest operation;
 *   3. the release runs (through the API, or --oneshot: the allocator's
 *      single call, as callers did before the API existed);
 *   4. the kernel's floor: one madvise(MADV_DONTNEED) over as many freshly
 *      touched bytes as the release returned.
 *
 * Prints one line of key=value figures.
 */

#include "qemu/osdep.h"
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

int main(int argc, char **argv)
{
    static int64_t stats_ns[STATS_SAMPLES];
    uint64_t mib = 400;
    gboolean oneshot = false;
    gboolean with_probe = false;
    GOptionEntry entries[] = {
        { "mib", 0, 0, G_OPTION_ARG_INT64, &mib,
          "MiB the workload allocates (default 400)", "N" },
        { "oneshot", 0, 0, G_OPTION_ARG_NONE, &oneshot,
          "release with the allocator's single call, not the API", NULL },
        { "probe", 0, 0, G_OPTION_ARG_NONE, &with_probe,
          "run a thread that allocates during the release, report its "
          "slowest malloc/free", NULL },
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
    uint64_t rss_after, returned, cached;
    int64_t t0, duration, floor_ns, idle_worst = 0;
    int i;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        g_printerr("release-bench: %s\n", gerr->message);
        return 2;
    }
    if (mib < 8 || mib > 16384) {
        g_printerr("release-bench: --mib must be 8..16384\n");
        return 2;
    }
    qemu_allocator_set_idle_interval(0);

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
    }

    /* What a stats query costs on this heap, without QMP around it */
    for (i = 0; i < STATS_SAMPLES; i++) {
        t0 = get_clock();
        qemu_allocator_get_stats(&before);
        stats_ns[i] = get_clock() - t0;
    }
    qsort(stats_ns, STATS_SAMPLES, sizeof(stats_ns[0]), cmp_i64);
    qemu_allocator_get_stats(&before);
    rss_before = qemu_process_rss();
    qatomic_set(&probe.measuring, true);
    t0 = get_clock();
    if (oneshot) {
        oneshot_release();
    } else if (!qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, 0, &r,
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

    printf("backend=%s mode=%s%s workload_mib=%" PRIu64
           " freed_mib=%.1f free_before_mib=%.1f releasable_before_mib=%.1f"
           " rss_before_mib=%.1f rss_after_mib=%.1f returned_mib=%.1f"
           " cached_mib=%.1f returned_pct=%.1f"
           " release_ms=%.2f floor_ms=%.2f ratio=%.2f"
           " steps=%u max_step_ms=%.2f stall_ms=%.2f idle_stall_ms=%.2f"
           " probe_ops=%" PRIu64 " left_free_mib=%.1f"
           " left_releasable_mib=%.1f stats_p50_us=%.1f stats_p99_us=%.1f\n",
           qemu_allocator_name(), oneshot ? "oneshot" : "api",
           with_probe ? "+probe" : "", mib,
           freed_bytes / (double)MiB, before.free / (double)MiB, before.releasable / (double)MiB,
           rss_before / (double)MiB, rss_after / (double)MiB,
           returned / (double)MiB, cached / (double)MiB,
           100.0 * returned / MAX(cached, 1),
           duration / 1e6, floor_ns / 1e6,
           (double)duration / MAX(floor_ns, 1),
           r.steps, r.max_step_ns / 1e6, probe.worst_ns / 1e6,
           idle_worst / 1e6, probe.ops,
           after.free / (double)MiB, after.releasable / (double)MiB,
           stats_ns[STATS_SAMPLES / 2] / 1e3,
           stats_ns[STATS_SAMPLES * 99 / 100] / 1e3);
    return 0;
}
