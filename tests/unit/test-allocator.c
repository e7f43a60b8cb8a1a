/*
 * Tests for returning free allocator memory to the OS
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * These run against whatever allocator the build links, and check the
 * figures against what the kernel reports in /proc/self/status.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/allocator.h"
#include "qemu/thread.h"
#include "qemu/units.h"

#define MIN_OBJECT 16
#define MAX_OBJECT 4096
#define KEEP_ONE_IN 64
#define THREADS 4
#define PER_THREAD (64 * MiB)

/*
 * Memory moves while a figure is read (stacks, glib, the kernel's own
 * accounting of page tables is not in RSS): compare with this much slack.
 */
#define RSS_SLACK (8 * MiB)

#if defined(CONFIG_TCMALLOC)
#define EXPECTED_BACKEND "tcmalloc"
#elif defined(CONFIG_JEMALLOC)
#define EXPECTED_BACKEND "jemalloc"
#elif defined(CONFIG_MALLOC_TRIM)
#define EXPECTED_BACKEND "glibc"
#else
#define EXPECTED_BACKEND "system"
#endif

/* Objects that outlive a workload, so that freed memory is fragmented. */
typedef struct Survivors {
    GPtrArray *objects;
    uint64_t allocated;
    uint64_t freed;
} Survivors;

typedef struct Worker {
    QemuThread thread;
    guint32 seed;
    uint64_t bytes;
    Survivors survivors;
} Worker;

/* VmRSS from /proc/self/status: another source than qemu_process_rss(). */
static uint64_t vm_rss(void)
{
    g_autofree char *status = NULL;
    const char *line;

    g_assert_true(g_file_get_contents("/proc/self/status", &status,
                                      NULL, NULL));
    line = strstr(status, "\nVmRSS:");
    g_assert_nonnull(line);
    return g_ascii_strtoull(line + strlen("\nVmRSS:"), NULL, 10) * KiB;
}

static void assert_within(uint64_t value, uint64_t expected, uint64_t slack)
{
    if (value + slack < expected || value > expected + slack) {
        g_test_message("%" PRIu64 " is not within %" PRIu64 " of %"
                       PRIu64, value, slack, expected);
        g_test_fail();
    }
}

/*
 * Allocate @bytes in objects of MIN_OBJECT..MAX_OBJECT bytes, touch them,
 * then free all but one in KEEP_ONE_IN.
 */
static void fragment_heap(guint32 seed, uint64_t bytes, Survivors *s)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    g_autoptr(GPtrArray) all = g_ptr_array_new();
    g_autoptr(GArray) sizes = g_array_new(false, false, sizeof(size_t));
    guint i;

    s->objects = g_ptr_array_new_with_free_func(g_free);
    s->allocated = s->freed = 0;
    while (s->allocated < bytes) {
        size_t size = g_rand_int_range(rand, MIN_OBJECT, MAX_OBJECT + 1);
        char *p = g_malloc(size);

        memset(p, 0xa5, size);
        g_ptr_array_add(all, p);
        g_array_append_val(sizes, size);
        s->allocated += size;
    }
    for (i = 0; i < all->len; i++) {
        if (i % KEEP_ONE_IN == 0) {
            g_ptr_array_add(s->objects, all->pdata[i]);
        } else {
            s->freed += g_array_index(sizes, size_t, i);
            g_free(all->pdata[i]);
        }
    }
}

static void *worker_run(void *opaque)
{
    Worker *w = opaque;

    fragment_heap(w->seed, w->bytes, &w->survivors);
    return NULL;
}

/* The workload of several threads; returns the bytes they freed. */
static uint64_t fragment_heap_threaded(Worker *workers, int n, uint64_t each)
{
    uint64_t freed = 0;
    int i;

    for (i = 0; i < n; i++) {
        workers[i].seed = 0x5eed + i;
        workers[i].bytes = each;
        qemu_thread_create(&workers[i].thread, "fragmenter", worker_run,
                           &workers[i], QEMU_THREAD_JOINABLE);
    }
    for (i = 0; i < n; i++) {
        qemu_thread_join(&workers[i].thread);
        freed += workers[i].survivors.freed;
    }
    return freed;
}

static void workers_cleanup(Worker *workers, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        g_ptr_array_unref(workers[i].survivors.objects);
    }
}

static bool release_now(uint64_t max_bytes, QemuAllocatorRelease *result,
                        Error **errp)
{
    return qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, max_bytes, result,
                                  errp);
}

/* Copies of every release notified, in order. */
static GArray *notified;
static QemuMutex notified_lock;

static void on_release(Notifier *n, void *data)
{
    const QemuAllocatorRelease *r = data;

    qemu_mutex_lock(&notified_lock);
    g_array_append_val(notified, *r);
    qemu_mutex_unlock(&notified_lock);
}

static Notifier release_notifier = { .notify = on_release };

static void assert_stats_consistent(const QemuAllocatorStats *s)
{
    g_assert_cmpstr(s->backend, ==, EXPECTED_BACKEND);
    g_assert_cmpuint(s->rss, >, 0);
    g_assert_cmpuint(s->held, ==, s->allocated + s->free);
    g_assert_cmpuint(s->releasable, <=, s->free);
    g_assert_cmpuint(s->n_figures, <=, QEMU_ALLOCATOR_MAX_FIGURES);
}

static bool have_stats(void)
{
    return strcmp(qemu_allocator_name(), "system") != 0;
}

static void test_backend(void)
{
    QemuAllocatorStats s;
    unsigned int i;

    g_assert_cmpstr(qemu_allocator_name(), ==, EXPECTED_BACKEND);
    g_assert_cmpint(qemu_allocator_can_release(), ==, have_stats());
    qemu_allocator_get_stats(&s);
    assert_within(s.rss, vm_rss(), RSS_SLACK);
    if (!have_stats()) {
        return;
    }
    assert_stats_consistent(&s);
    g_assert_cmpuint(s.n_figures, >, 0);
    for (i = 0; i < s.n_figures; i++) {
        g_assert_nonnull(s.figures[i].name);
    }
}

/* The figures move the way known allocations and frees move them. */
static void test_stats_follow_heap(void)
{
    QemuAllocatorStats s0, s1, s2;
    Survivors sv;
    uint64_t bytes = 64 * MiB;
    uint64_t kept;

    if (!have_stats()) {
        g_test_skip("this allocator has no statistics");
        return;
    }
    qemu_allocator_get_stats(&s0);
    {
        g_autoptr(GRand) rand = g_rand_new_with_seed(42);
        g_autoptr(GPtrArray) objs = g_ptr_array_new_with_free_func(g_free);
        uint64_t total = 0;

        while (total < bytes) {
            size_t size = g_rand_int_range(rand, MIN_OBJECT, MAX_OBJECT + 1);
            char *p = g_malloc(size);

            memset(p, 0x5a, size);
            g_ptr_array_add(objs, p);
            total += size;
        }
        qemu_allocator_get_stats(&s1);
        assert_stats_consistent(&s1);
        /* Allocator overhead per object is small against 16..4096 bytes */
        g_assert_cmpuint(s1.allocated, >=, s0.allocated + bytes * 9 / 10);
        g_assert_cmpuint(s1.allocated, <=, s0.allocated + bytes * 13 / 10);
        g_assert_cmpuint(s1.rss, >=, s0.rss + bytes * 8 / 10);
    }
    qemu_allocator_get_stats(&s2);
    assert_stats_consistent(&s2);
    /* All freed: back to where it started, the memory now free */
    assert_within(s2.allocated, s0.allocated, bytes / 10);

    fragment_heap(7, bytes, &sv);
    qemu_allocator_get_stats(&s2);
    assert_stats_consistent(&s2);
    kept = sv.allocated - sv.freed;
    assert_within(s2.allocated, s0.allocated + kept, bytes / 10);
    g_assert_cmpuint(s2.free, >=, s0.free + sv.freed * 8 / 10);
    g_ptr_array_unref(sv.objects);
}

/*
 * The main promise: after a multi-threaded workload freed most of what it
 * allocated, a release brings RSS down by most of what the allocator
 * called releasable, and the release's own figures agree with /proc.
 */
static void test_release_reclaims(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    g_autoptr(Error) err = NULL;
    QemuAllocatorStats before, after;
    QemuAllocatorRelease r;
    uint64_t freed, rss, dropped;

    if (!qemu_allocator_can_release()) {
        g_assert_false(release_now(0, &r, &err));
        g_assert_nonnull(strstr(error_get_pretty(err), "cannot return"));
        return;
    }
    freed = fragment_heap_threaded(workers, THREADS, PER_THREAD);
    qemu_allocator_get_stats(&before);
    assert_stats_consistent(&before);
    g_test_message("freed %" PRIu64 " MiB; allocator: free %" PRIu64
                   " MiB, releasable %" PRIu64 " MiB, rss %" PRIu64 " MiB",
                   freed / MiB, before.free / MiB, before.releasable / MiB,
                   before.rss / MiB);
    /*
     * The allocator can return a lot.  Not "it holds most of what was
     * freed": the threads run together, so one reuses what another freed,
     * and bytes freed twice occupied the same memory (on tcmalloc free was
     * 174-276 MiB for 252 MiB freed, depending on how the threads ran).
     */
    g_assert_cmpuint(before.releasable, >=, freed / 4);

    rss = vm_rss();
    g_assert_true(release_now(0, &r, &error_abort));
    g_test_message("returned %" PRIu64 " MiB in %" PRId64 " us, %u steps, "
                   "longest %" PRId64 " us; rss %" PRIu64 " -> %" PRIu64
                   " MiB", r.returned / MiB, r.duration_ns / 1000, r.steps,
                   r.max_step_ns / 1000, r.rss_before / MiB,
                   r.rss_after / MiB);
    g_assert_cmpstr(r.backend, ==, EXPECTED_BACKEND);
    g_assert_false(r.shared);
    g_assert_cmpuint(r.steps, >=, 1);
    g_assert_cmpint(r.duration_ns, >, 0);
    g_assert_cmpint(r.max_step_ns, <=, r.duration_ns);
    assert_within(r.rss_before, rss, RSS_SLACK);
    assert_within(r.rss_after, vm_rss(), RSS_SLACK);

    /* RSS really dropped, by most of what was called releasable */
    g_assert_cmpuint(r.rss_after, <, r.rss_before);
    dropped = r.rss_before - r.rss_after;
    g_assert_cmpuint(dropped, >=, before.releasable * 3 / 4);
    /* What the allocator says it returned is what the kernel saw go */
    assert_within(r.returned, dropped, dropped / 10 + RSS_SLACK);

    qemu_allocator_get_stats(&after);
    assert_stats_consistent(&after);
    g_assert_cmpuint(after.releasable, <=, before.releasable / 10 + MiB);
    assert_within(after.held, before.held - MIN(before.held, r.returned),
                  before.held / 10 + RSS_SLACK);
    if (after.has_returned) {
        g_assert_cmpuint(after.returned, >=,
                         before.returned + r.returned * 9 / 10);
    }
    workers_cleanup(workers, THREADS);
}

typedef struct Releaser {
    QemuThread thread;
    QemuAllocatorRelease result;
    bool ok;
} Releaser;

static void *releaser_run(void *opaque)
{
    Releaser *rel = opaque;

    rel->ok = release_now(0, &rel->result, NULL);
    return NULL;
}

/* Releases asked for at once never run in parallel. */
static void test_release_concurrent(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    Releaser rel[6];
    QemuAllocatorCounters c0, c1;
    uint64_t returned = 0;
    int64_t latest;
    int i, j, ran = 0;

    if (!qemu_allocator_can_release()) {
        g_test_skip("this allocator cannot release");
        return;
    }
    fragment_heap_threaded(workers, THREADS, PER_THREAD / 2);
    qemu_allocator_get_counters(&c0);
    g_array_set_size(notified, 0);
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        qemu_thread_create(&rel[i].thread, "releaser", releaser_run, &rel[i],
                           QEMU_THREAD_JOINABLE);
    }
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        qemu_thread_join(&rel[i].thread);
        g_assert_true(rel[i].ok);
        g_assert_cmpint(rel[i].result.trigger, ==, QEMU_ALLOCATOR_MANUAL);
        if (!rel[i].result.shared) {
            ran++;
            returned += rel[i].result.returned;
        }
    }
    g_test_message("%d releases for %zu requests", ran, ARRAY_SIZE(rel));
    g_assert_cmpint(ran, >=, 1);
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        QemuAllocatorRelease *a = &rel[i].result;
        bool found = !a->shared;

        for (j = 0; j < ARRAY_SIZE(rel); j++) {
            QemuAllocatorRelease *b = &rel[j].result;

            if (i == j || b->shared) {
                continue;
            }
            if (a->shared) {
                /* A shared result is one that really ran */
                found |= a->start_ns == b->start_ns;
            } else {
                /* Two releases that ran never overlapped in time */
                g_assert_true(a->start_ns + a->duration_ns <= b->start_ns ||
                              b->start_ns + b->duration_ns <= a->start_ns);
            }
        }
        g_assert_true(found);
    }

    /* Each release that ran is counted and notified exactly once */
    qemu_allocator_get_counters(&c1);
    g_assert_cmpuint(c1.manual - c0.manual, ==, ran);
    g_assert_cmpuint(c1.automatic, ==, c0.automatic);
    g_assert_cmpuint(c1.shared - c0.shared, ==, ARRAY_SIZE(rel) - ran);
    g_assert_cmpuint(c1.returned - c0.returned, ==, returned);
    g_assert_cmpint(c1.time_ns, >, c0.time_ns);
    g_assert_true(c1.has_last);
    g_assert_cmpuint(notified->len, ==, ran);
    for (i = 0; i < notified->len; i++) {
        QemuAllocatorRelease *n = &g_array_index(notified,
                                                 QemuAllocatorRelease, i);
        bool match = false;

        g_assert_false(n->shared);
        for (j = 0; j < ARRAY_SIZE(rel); j++) {
            match |= !rel[j].result.shared &&
                     n->start_ns == rel[j].result.start_ns &&
                     n->returned == rel[j].result.returned;
        }
        g_assert_true(match);
    }
    /* The last release counted is the one that started last */
    latest = 0;
    for (i = 0; i < notified->len; i++) {
        latest = MAX(latest, g_array_index(notified, QemuAllocatorRelease,
                                           i).start_ns);
    }
    g_assert_cmpint(c1.last.start_ns, ==, latest);
    workers_cleanup(workers, THREADS);
}

/* A gentle release stops early where it can, and is refused where not. */
static void test_release_limit(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    QemuAllocatorStats before, mid;
    QemuAllocatorRelease r;
    uint64_t limit;

    if (!qemu_allocator_can_release()) {
        g_test_skip("this allocator cannot release");
        return;
    }
    if (!qemu_allocator_can_limit()) {
        g_autoptr(Error) err = NULL;

        g_assert_false(release_now(MiB, &r, &err));
        g_assert_nonnull(strstr(error_get_pretty(err), "cannot limit"));
        /* and the refusal left everything working */
        g_assert_true(release_now(0, &r, &error_abort));
        return;
    }
    fragment_heap_threaded(workers, THREADS, PER_THREAD);
    qemu_allocator_get_stats(&before);
    limit = before.releasable / 8;
    g_assert_true(release_now(limit, &r, &error_abort));
    qemu_allocator_get_stats(&mid);
    g_test_message("limit %" PRIu64 " KiB: returned %" PRIu64 " KiB in %u "
                   "steps", limit / KiB, r.returned / KiB, r.steps);
    g_assert_cmpuint(r.returned, >=, limit);
    g_assert_cmpuint(mid.releasable, >, 0);
    g_assert_true(release_now(0, &r, &error_abort));
    g_assert_cmpuint(r.returned, >, 0);
    workers_cleanup(workers, THREADS);
}

/* The RCU thread's idle release honours its rate limit. */
static void test_idle_rate_limit(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    QemuAllocatorStats s0, s1;
    QemuAllocatorCounters c0, c1;
    int64_t saved = qemu_allocator_get_idle_interval();

    if (!have_stats() || !strcmp(qemu_allocator_name(), "jemalloc")) {
        /* jemalloc's idle release follows its own decay times */
        g_test_skip("no immediate idle-time release with this allocator");
        return;
    }
    qemu_allocator_set_idle_interval(1);
    g_usleep(2000);
    fragment_heap_threaded(workers, THREADS, PER_THREAD / 4);
    qemu_allocator_get_stats(&s0);
    g_assert_cmpuint(s0.releasable, >=, 8 * MiB);
    qemu_allocator_get_counters(&c0);
    qemu_allocator_idle();
    qemu_allocator_get_counters(&c1);
    qemu_allocator_get_stats(&s1);
    /* Due: it ran, and left less releasable than there was */
    g_assert_cmpuint(s1.releasable, <, s0.releasable / 2);
    g_assert_cmpuint(c1.idle, ==, c0.idle + 1);
    g_assert_cmpuint(c1.manual, ==, c0.manual);
    workers_cleanup(workers, THREADS);

    qemu_allocator_set_idle_interval(3600 * 1000);
    fragment_heap_threaded(workers, THREADS, PER_THREAD / 4);
    qemu_allocator_get_stats(&s0);
    g_assert_cmpuint(s0.releasable, >=, 8 * MiB);
    qemu_allocator_idle();
    qemu_allocator_get_counters(&c0);
    qemu_allocator_get_stats(&s1);
    /* Not due: nothing was done */
    g_assert_cmpuint(c0.idle, ==, c1.idle);
    assert_within(s1.releasable, s0.releasable, s0.releasable / 10);
    workers_cleanup(workers, THREADS);

    qemu_allocator_set_idle_interval(0);
    g_assert_cmpint(qemu_allocator_get_idle_interval(), ==, 0);
    qemu_allocator_set_idle_interval(saved);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* Only test_idle_rate_limit() wants the RCU thread's releases */
    qemu_allocator_set_idle_interval(0);
    notified = g_array_new(false, false, sizeof(QemuAllocatorRelease));
    qemu_mutex_init(&notified_lock);
    qemu_allocator_add_release_notifier(&release_notifier);
    g_test_add_func("/allocator/backend", test_backend);
    g_test_add_func("/allocator/stats/follow-heap", test_stats_follow_heap);
    g_test_add_func("/allocator/release/reclaims", test_release_reclaims);
    g_test_add_func("/allocator/release/concurrent",
                    test_release_concurrent);
    g_test_add_func("/allocator/release/limit", test_release_limit);
    g_test_add_func("/allocator/idle/rate-limit", test_idle_rate_limit);
    return g_test_run();
}
