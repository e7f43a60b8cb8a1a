/*
 * Tests for returning free allocator memory to the OS
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * These run against whatever allocator the build links, and check the
 * figures against what the kernel reports in /proc/self/status.
 */

#include "qemu/osdep.h"
#include <sys/wait.h>
#include "qapi/error.h"
#include "qemu/allocator.h"
#include "qemu/thread.h"
#include "qemu/units.h"
#ifdef CONFIG_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define MIN_OBJECT 16
#define MAX_OBJECT 4096
#define KEEP_ONE_IN 64
#define THREADS 4
#define PER_THREAD (64 * MiB)

/* Memory that moves while a figure is read: stacks, glib, the kernel */
#define RSS_SLACK (8 * MiB)

/* Under the sanitizers, glibc's malloc is not the heap: no backend */
#if defined(CONFIG_MALLOC_TRIM) && !defined(QEMU_SANITIZE_ADDRESS) && \
    !defined(QEMU_SANITIZE_THREAD)
#define IS_GLIBC 1
#else
#define IS_GLIBC 0
#endif

#if defined(CONFIG_TCMALLOC)
#define EXPECTED_BACKEND "tcmalloc"
#elif defined(CONFIG_JEMALLOC)
#define EXPECTED_BACKEND "jemalloc"
#elif IS_GLIBC
#define EXPECTED_BACKEND "glibc"
#else
#define EXPECTED_BACKEND "system"
#endif

#define IS(backend) (strcmp(EXPECTED_BACKEND, backend) == 0)

/* glibc's statistics need mallinfo2(), glibc 2.33 or later */
#if defined(CONFIG_TCMALLOC) || defined(CONFIG_JEMALLOC) || \
    (defined(CONFIG_MALLINFO2) && IS_GLIBC)
#define HAS_STATS true
#else
#define HAS_STATS false
#endif

typedef struct Worker {
    QemuThread thread;
    guint32 seed;
    GPtrArray *survivors;   /* objects that outlive the workload */
    uint64_t allocated;
    uint64_t freed;
} Worker;

/*
 * Workers stay alive until workers_cleanup(): jemalloc purges an exiting
 * thread's memory, and QEMU's threads do not exit after I/O either.
 */
static QemuSemaphore workers_ready;
static QemuEvent workers_exit;

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
 * The way a burst of I/O leaves the heap: allocate PER_THREAD bytes in
 * objects of MIN_OBJECT..MAX_OBJECT bytes, touch them, free all but one in
 * KEEP_ONE_IN.
 */
static void *worker_run(void *opaque)
{
    Worker *w = opaque;
    g_autoptr(GRand) rand = g_rand_new_with_seed(w->seed);
    g_autoptr(GPtrArray) all = g_ptr_array_new();
    guint i;

    w->survivors = g_ptr_array_new_with_free_func(g_free);
    w->allocated = w->freed = 0;
    while (w->allocated < PER_THREAD) {
        size_t size = g_rand_int_range(rand, MIN_OBJECT, MAX_OBJECT + 1);
        size_t *p = g_malloc(size);

        memset(p, 0xa5, size);
        *p = size;
        g_ptr_array_add(all, p);
        w->allocated += size;
    }
    for (i = 0; i < all->len; i++) {
        size_t *p = all->pdata[i];

        if (i % KEEP_ONE_IN == 0) {
            g_ptr_array_add(w->survivors, p);
        } else {
            w->freed += *p;
            g_free(p);
        }
    }
    qemu_sem_post(&workers_ready);
    qemu_event_wait(&workers_exit);
    return NULL;
}

/* Returns the bytes the workload freed, minus those it kept. */
static uint64_t fragment_heap(Worker *workers, uint64_t *kept)
{
    uint64_t freed = 0;
    int i;

    *kept = 0;
    qemu_event_reset(&workers_exit);
    for (i = 0; i < THREADS; i++) {
        workers[i].seed = 0x5eed + i;
        qemu_thread_create(&workers[i].thread, "fragmenter", worker_run,
                           &workers[i], QEMU_THREAD_JOINABLE);
    }
    for (i = 0; i < THREADS; i++) {
        qemu_sem_wait(&workers_ready);
    }
    for (i = 0; i < THREADS; i++) {
        freed += workers[i].freed;
        *kept += workers[i].allocated - workers[i].freed;
    }
    return freed;
}

static void workers_cleanup(Worker *workers)
{
    int i;

    qemu_event_set(&workers_exit);
    for (i = 0; i < THREADS; i++) {
        qemu_thread_join(&workers[i].thread);
        g_ptr_array_unref(workers[i].survivors);
    }
}

/*
 * Whether the allocator keeps the address space of what it returned, and
 * counts it: jemalloc only with opt.retain (64-bit Linux).
 */
static bool returned_is_kept(void)
{
#ifdef CONFIG_JEMALLOC
    bool retain = false;
    size_t len = sizeof(retain);

    return !mallctl("opt.retain", &retain, &len, NULL, 0) && retain;
#else
    return true;
#endif
}

/* Copies of every release notified, in order. */
static GArray *notified;
static QemuMutex notified_lock;

/* While set, a notified release waits in its notifier until let go */
static bool holding;
static QemuEvent in_notifier;
static QemuEvent let_go;

static void on_release(Notifier *n, void *data)
{
    if (qatomic_read(&holding)) {
        qemu_event_set(&in_notifier);
        qemu_event_wait(&let_go);
    }
    qemu_mutex_lock(&notified_lock);
    g_array_append_vals(notified, data, 1);
    qemu_mutex_unlock(&notified_lock);
}

static Notifier release_notifier = { .notify = on_release };

/* Each backend has the figures it can know, and only those. */
static void test_backend(void)
{
    QemuAllocatorStats s;
    bool has_stats = qemu_allocator_get_stats(&s);

    g_assert_cmpstr(qemu_allocator_name(), ==, EXPECTED_BACKEND);
    g_assert_cmpint(qemu_allocator_can_release(), ==, !IS("system"));
    g_assert_cmpint(has_stats, ==, HAS_STATS);
    g_assert_cmpint(s.has_releasable, ==, IS("tcmalloc") || IS("jemalloc"));
    g_assert_cmpint(s.has_returned, ==, IS("tcmalloc") || IS("jemalloc"));
    if (has_stats) {
        g_assert_cmpuint(s.allocated, >, 0);
    }
}

/* The figures move the way known allocations and frees move them. */
static void test_stats_follow_heap(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    QemuAllocatorStats s0, s1;
    uint64_t freed, kept;

    if (!qemu_allocator_get_stats(&s0)) {
        g_test_skip("this allocator has no statistics");
        return;
    }
    freed = fragment_heap(workers, &kept);
    qemu_allocator_get_stats(&s1);
    /* The survivors are in use: about 4 MiB; per-object overhead is small */
    g_assert_cmpuint(s1.allocated, >=, s0.allocated + kept / 2);
    g_assert_cmpuint(s1.allocated, <=, s0.allocated + kept * 2 + MiB);
    /*
     * Much of what was freed is free.  Not all: threads that run together
     * reuse each other's freed memory, so bytes freed twice occupied the
     * same memory.  Not more than before either, with glibc: free memory
     * it already returned, which it counts as free, is reused first.
     */
    g_assert_cmpuint(s1.free, >=, freed / 4);
    if (s1.has_releasable) {
        g_assert_cmpuint(s1.releasable, >=, freed / 4);
    }
    workers_cleanup(workers);
}

/*
 * The main promise: after a multi-threaded workload freed most of what it
 * allocated, a release brings RSS back near where it was before, and the
 * release's own figures agree with /proc.
 */
static void test_release_reclaims(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    g_autoptr(Error) err = NULL;
    QemuAllocatorStats before, after;
    QemuAllocatorRelease r;
    uint64_t rss0, freed, kept, dropped;

    if (!qemu_allocator_can_release()) {
        g_assert_false(qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &r,
                                              &err));
        g_assert_nonnull(strstr(error_get_pretty(err), "cannot return"));
        return;
    }
    g_assert_true(qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &r,
                                         &error_abort));
    rss0 = vm_rss();
    freed = fragment_heap(workers, &kept);
    qemu_allocator_get_stats(&before);
    g_assert_true(qemu_allocator_release(QEMU_ALLOCATOR_MANUAL, &r,
                                         &error_abort));
    g_test_message("freed %" PRIu64 " MiB, kept %" PRIu64 " MiB; returned %"
                   PRIu64 " MiB in %" PRId64 " us; RSS %" PRIu64 " -> %"
                   PRIu64 " -> %" PRIu64 " MiB", freed / MiB, kept / MiB,
                   r.returned / MiB, r.duration_ns / 1000, rss0 / MiB,
                   r.rss_before / MiB, r.rss_after / MiB);
    g_assert_cmpint(r.trigger, ==, QEMU_ALLOCATOR_MANUAL);
    g_assert_cmpint(r.duration_ns, >, 0);

    g_assert_cmpuint(r.rss_before, >, r.rss_after);
    dropped = r.rss_before - r.rss_after;
    g_assert_cmpint(r.has_returned, ==, !IS("glibc"));
    if (!r.has_returned) {
        /*
         * glibc has no figure to compare with, nor caches that hold on to
         * memory: RSS is back to where it was plus what the workload kept,
         * and the pages its survivors pin: about one page in KEEP_ONE_IN / 2,
         * as the objects are 2 KiB on average; twice that, as a margin.
         */
        g_assert_cmpuint(r.rss_after, <=, rss0 + kept +
                         freed / (KEEP_ONE_IN / 4) + RSS_SLACK);
    } else {
        /* What the allocator says it returned is what the kernel saw go */
        assert_within(r.returned, dropped, dropped / 10 + RSS_SLACK);
        g_assert_cmpuint(dropped, >=, before.releasable * 3 / 4);
        qemu_allocator_get_stats(&after);
        g_assert_cmpuint(after.releasable, <=, before.releasable / 10 + MiB);
        if (returned_is_kept()) {
            g_assert_cmpuint(after.returned, >=,
                             before.returned + r.returned * 9 / 10);
        }
    }
    workers_cleanup(workers);
}

typedef struct Releaser {
    QemuThread thread;
    QemuAllocatorTrigger trigger;
    QemuAllocatorRelease result;
    bool ok;
} Releaser;

/* Set once every releaser thread exists: they all start at once */
static QemuEvent releasers_go;

static bool same_release(const QemuAllocatorRelease *a,
                         const QemuAllocatorRelease *b)
{
    return a->trigger == b->trigger && a->has_returned == b->has_returned &&
           a->returned == b->returned && a->rss_before == b->rss_before &&
           a->rss_after == b->rss_after && a->start_ns == b->start_ns &&
           a->duration_ns == b->duration_ns;
}

static void *releaser_run(void *opaque)
{
    Releaser *rel = opaque;

    qemu_event_wait(&releasers_go);
    rel->ok = qemu_allocator_release(rel->trigger, &rel->result, NULL);
    return NULL;
}

/*
 * Manual and automatic releases asked for at once run one after the
 * other, and each is counted and notified once, under its own trigger.
 */
static void test_release_concurrent(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    Releaser rel[6];
    QemuAllocatorCounters c0, c1;
    uint64_t kept;
    int64_t latest = 0;
    int i, j;

    if (!qemu_allocator_can_release()) {
        g_test_skip("this allocator cannot release");
        return;
    }
    fragment_heap(workers, &kept);
    qemu_allocator_get_counters(&c0);
    g_array_set_size(notified, 0);
    qemu_event_reset(&releasers_go);
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        rel[i].trigger = i % 2 ? QEMU_ALLOCATOR_AUTOMATIC
                               : QEMU_ALLOCATOR_MANUAL;
        qemu_thread_create(&rel[i].thread, "releaser", releaser_run, &rel[i],
                           QEMU_THREAD_JOINABLE);
    }
    qemu_event_set(&releasers_go);
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        qemu_thread_join(&rel[i].thread);
        g_assert_true(rel[i].ok);
        g_assert_cmpint(rel[i].result.trigger, ==, rel[i].trigger);
        latest = MAX(latest, rel[i].result.start_ns);
    }
    for (i = 0; i < ARRAY_SIZE(rel); i++) {
        QemuAllocatorRelease *a = &rel[i].result;
        bool found = false;

        for (j = 0; j < ARRAY_SIZE(rel); j++) {
            QemuAllocatorRelease *b = &rel[j].result;

            /* Two releases never overlapped in time */
            g_assert_true(i == j ||
                          a->start_ns + a->duration_ns <= b->start_ns ||
                          b->start_ns + b->duration_ns <= a->start_ns);
        }
        for (j = 0; j < notified->len; j++) {
            found |= same_release(a, &g_array_index(notified,
                                                    QemuAllocatorRelease, j));
        }
        g_assert_true(found);
    }
    qemu_allocator_get_counters(&c1);
    g_assert_cmpuint(notified->len, ==, ARRAY_SIZE(rel));
    /* Notified in the order they ran */
    for (j = 1; j < notified->len; j++) {
        g_assert_cmpint(g_array_index(notified, QemuAllocatorRelease,
                                      j - 1).start_ns, <,
                        g_array_index(notified, QemuAllocatorRelease,
                                      j).start_ns);
    }
    g_assert_cmpuint(c1.manual - c0.manual, ==, ARRAY_SIZE(rel) / 2);
    g_assert_cmpuint(c1.automatic - c0.automatic, ==, ARRAY_SIZE(rel) / 2);
    g_assert_false(c1.running);
    g_assert_true(c1.has_last);
    g_assert_cmpint(c1.last.start_ns, ==, latest);
    workers_cleanup(workers);
}

/*
 * The RCU thread's hook trims glibc's heap, as the RCU thread always did.
 * (jemalloc's decay applies its decay time, 10 s; tcmalloc has no hook.)
 */
static void test_idle(void)
{
    g_autofree Worker *workers = g_new0(Worker, THREADS);
    uint64_t kept, rss0, rss1, rss2;

    if (!IS("glibc")) {
        g_test_skip("the idle-time release is only immediate with glibc");
        return;
    }
    rss0 = vm_rss();
    fragment_heap(workers, &kept);
    rss1 = vm_rss();
    qemu_allocator_idle();
    rss2 = vm_rss();
    g_test_message("RSS %" PRIu64 " -> %" PRIu64 " -> %" PRIu64 " MiB",
                   rss0 / MiB, rss1 / MiB, rss2 / MiB);
    g_assert_cmpuint(rss2, <, rss1 - (rss1 - rss0) / 2);
    workers_cleanup(workers);
}

/* Posted when the idle hook has returned */
static QemuSemaphore idle_returned;

static void *idle_run(void *opaque)
{
    qemu_allocator_idle();
    qemu_sem_post(&idle_returned);
    return NULL;
}

/*
 * The RCU thread never waits for a release: its hook returns while a
 * release is held in a notifier, that is before the release has ended.
 */
static void test_idle_beside_release(void)
{
    Releaser rel = { .trigger = QEMU_ALLOCATOR_MANUAL };
    QemuThread idle;
    bool returned;

    if (!qemu_allocator_can_release()) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qemu_event_reset(&in_notifier);
    qemu_event_reset(&let_go);
    qemu_event_set(&releasers_go);
    qatomic_set(&holding, true);
    qemu_thread_create(&rel.thread, "releaser", releaser_run, &rel,
                       QEMU_THREAD_JOINABLE);
    qemu_event_wait(&in_notifier);
    qatomic_set(&holding, false);

    qemu_thread_create(&idle, "idle", idle_run, NULL, QEMU_THREAD_JOINABLE);
    /* A hook that waited for the release would never return on its own */
    returned = qemu_sem_timedwait(&idle_returned, 10 * 1000) == 0;

    qemu_event_set(&let_go);
    qemu_thread_join(&rel.thread);
    qemu_thread_join(&idle);
    g_assert_true(rel.ok);
    g_assert_true(returned);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qemu_sem_init(&workers_ready, 0);
    qemu_event_init(&workers_exit, false);
    qemu_event_init(&releasers_go, false);
    qemu_event_init(&in_notifier, false);
    qemu_event_init(&let_go, false);
    qemu_sem_init(&idle_returned, 0);
    notified = g_array_new(false, false, sizeof(QemuAllocatorRelease));
    qemu_mutex_init(&notified_lock);
    qemu_allocator_add_release_notifier(&release_notifier);
    g_test_add_func("/allocator/backend", test_backend);
    g_test_add_func("/allocator/stats/follow-heap", test_stats_follow_heap);
    g_test_add_func("/allocator/release/reclaims", test_release_reclaims);
    g_test_add_func("/allocator/release/concurrent",
                    test_release_concurrent);
    g_test_add_func("/allocator/idle", test_idle);
    g_test_add_func("/allocator/idle-beside-release",
                    test_idle_beside_release);
    return g_test_run();
}
