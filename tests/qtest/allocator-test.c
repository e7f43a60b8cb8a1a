/*
 * QTest for x-query-allocator-stats, x-release-free-memory, the
 * ALLOCATOR_MEMORY_RELEASED event, their HMP commands and the automatic
 * release after a backup
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * QEMU runs with the allocator this build links.  The heap is filled the
 * way it is in production: a backup job with many parallel requests
 * reads into bounce buffers, then frees them.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qobject/qdict.h"
#include "qobject/qnum.h"
#include "qemu/units.h"

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
#define CAN_RELEASE (!IS("system"))

/* glibc's statistics need mallinfo2(), glibc 2.33 or later */
#if defined(CONFIG_TCMALLOC) || defined(CONFIG_JEMALLOC) || \
    (defined(CONFIG_MALLINFO2) && IS_GLIBC)
#define HAS_STATS true
#else
#define HAS_STATS false
#endif

/*
 * A backup of a file into a slow null-co disk, with many requests at once,
 * each holding its own 64 KiB bounce buffer.
 */
#define BACKUP_SIZE (256 * MiB)
#define BACKUP_WORKERS 2048
#define BACKUP_CHUNK (64 * KiB)

static char *source_path;

static uint64_t get_u64(QDict *d, const char *key)
{
    QNum *n = qobject_to(QNum, qdict_get(d, key));
    uint64_t v;

    if (!n || !qnum_get_try_uint(n, &v)) {
        g_error("'%s' is missing or not an unsigned number", key);
    }
    return v;
}

static uint64_t vm_rss(QTestState *qts)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", qtest_pid(qts));
    g_autofree char *status = NULL;
    const char *line;

    g_assert_true(g_file_get_contents(path, &status, NULL, NULL));
    line = strstr(status, "\nVmRSS:");
    g_assert_nonnull(line);
    return g_ascii_strtoull(line + strlen("\nVmRSS:"), NULL, 10) * KiB;
}

static QDict *query_info(QTestState *qts)
{
    return qtest_qmp_assert_success_ref(qts,
        "{'execute': 'x-query-allocator-stats'}");
}

static void check_release(QDict *r, const char *trigger)
{
    g_assert_cmpstr(qdict_get_str(r, "trigger"), ==, trigger);
    /* glibc does not count what it returns */
    g_assert_cmpint(qdict_haskey(r, "returned"), ==, !IS("glibc"));
    g_assert_cmpuint(get_u64(r, "process-rss-before"), >, 0);
    g_assert_cmpuint(get_u64(r, "process-rss-after"), >, 0);
    get_u64(r, "duration-us");
}

/* Each backend has the figures it can know, and only those. */
static void test_query(void)
{
    QTestState *qts = qtest_init("-machine none");
    QDict *info = query_info(qts);
    QDict *stats = qdict_get_qdict(info, "stats");

    g_assert_cmpstr(qdict_get_str(info, "backend"), ==, EXPECTED_BACKEND);
    g_assert_cmpint(!!stats, ==, HAS_STATS);
    if (stats) {
        g_assert_cmpuint(get_u64(stats, "allocated"), >, 0);
        get_u64(stats, "free");
        g_assert_cmpint(qdict_haskey(stats, "releasable"), ==,
                        !IS("glibc"));
        g_assert_cmpint(qdict_haskey(stats, "returned"), ==, !IS("glibc"));
    }
    g_assert_cmpuint(get_u64(info, "manual-releases"), ==, 0);
    g_assert_cmpuint(get_u64(info, "automatic-releases"), ==, 0);
    g_assert_false(qdict_haskey(info, "last-release"));
    qobject_unref(info);
    qtest_quit(qts);
}

/* A release is counted once, and its event carries exactly its figures. */
static void test_release(void)
{
    QTestState *qts = qtest_init("-machine none");
    QDict *rsp, *ret, *ev, *info, *rets[3];
    int i;

    if (!CAN_RELEASE) {
        rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory'}");
        g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                              "desc"), "cannot return"));
        qobject_unref(rsp);
        info = query_info(qts);
        g_assert_cmpuint(get_u64(info, "manual-releases"), ==, 0);
        qobject_unref(info);
        qtest_quit(qts);
        return;
    }

    ret = qtest_qmp_assert_success_ref(qts,
        "{'execute': 'x-release-free-memory'}");
    check_release(ret, "manual");
    ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");
    g_assert_true(qobject_is_equal(QOBJECT(qdict_get_qdict(ev, "data")),
                                   QOBJECT(ret)));
    info = query_info(qts);
    g_assert_cmpuint(get_u64(info, "manual-releases"), ==, 1);
    g_assert_cmpuint(get_u64(info, "automatic-releases"), ==, 0);
    g_assert_true(qobject_is_equal(qdict_get(info, "last-release"),
                                   QOBJECT(ret)));
    qobject_unref(info);
    qobject_unref(ev);
    qobject_unref(ret);

    /*
     * Not throttled: releases right after each other have their own
     * events (a throttle would send the first and the last of a second)
     */
    for (i = 0; i < 3; i++) {
        rets[i] = qtest_qmp_assert_success_ref(qts,
            "{'execute': 'x-release-free-memory'}");
    }
    for (i = 0; i < 3; i++) {
        ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");
        g_assert_true(qobject_is_equal(QOBJECT(qdict_get_qdict(ev, "data")),
                                       QOBJECT(rets[i])));
        qobject_unref(ev);
        qobject_unref(rets[i]);
    }
    qtest_quit(qts);
}

/* Data, not a hole: the backup reads it all.  Made once, when needed. */
static void make_source(void)
{
    g_autofree char *chunk = NULL;
    int fd, i;

    if (source_path) {
        return;
    }
    chunk = g_malloc(MiB);
    memset(chunk, 0x5a, MiB);
    fd = g_file_open_tmp("allocator-test-XXXXXX", &source_path, NULL);
    g_assert_cmpint(fd, >=, 0);
    for (i = 0; i < BACKUP_SIZE / MiB; i++) {
        g_assert_cmpint(write(fd, chunk, MiB), ==, MiB);
    }
    close(fd);
}

static QTestState *start_with_disks(const char *extra)
{
    const char *tunables = g_getenv("GLIBC_TUNABLES");
    /* glibc would return what is at the top of its heap by itself */
    const char *ours = "glibc.malloc.trim_threshold=1073741824";
    g_autofree char *all = tunables && *tunables ?
        g_strdup_printf("%s:%s", tunables, ours) : g_strdup(ours);

    make_source();
    g_setenv("GLIBC_TUNABLES", all, true);
    return qtest_initf("-machine none "
        "-blockdev file,node-name=src,filename=%s "
        "-blockdev null-co,node-name=tgt,size=%" PRIu64 ",latency-ns=50000000 "
        "%s",
        source_path, (uint64_t)BACKUP_SIZE, extra);
}

/* Returns the highest RSS seen while the backup ran */
static uint64_t run_backup(QTestState *qts)
{
    uint64_t peak = 0;
    QDict *ev = NULL;

    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
        " 'arguments': {'job-id': 'backup', 'device': 'src', 'target': 'tgt',"
        "  'sync': 'full', 'x-perf': {'use-copy-range': false,"
        "  'max-workers': %d,"
        "  'max-chunk': %" PRIu64 "}}}", BACKUP_WORKERS,
        (uint64_t)BACKUP_CHUNK);
    while (!ev) {
        peak = MAX(peak, vm_rss(qts));
        /* Events that come meanwhile are kept for qtest_qmp_event_ref() */
        qobject_unref(qtest_qmp_assert_success_ref(qts,
            "{'execute': 'query-block-jobs'}"));
        ev = qtest_qmp_event_ref(qts, "BLOCK_JOB_COMPLETED");
    }
    g_assert_false(qdict_haskey(qdict_get_qdict(ev, "data"), "error"));
    qobject_unref(ev);
    return peak;
}

/*
 * When a backup ends, QEMU returns its bounce buffers by itself: one
 * automatic release, and the process's RSS back near where it started.
 */
static void test_backup(void)
{
    QTestState *qts = start_with_disks("");
    uint64_t rss0 = vm_rss(qts), peak;
    QDict *ev, *info;

    peak = run_backup(qts);
    if (!CAN_RELEASE) {
        info = query_info(qts);
        g_assert_cmpuint(get_u64(info, "automatic-releases"), ==, 0);
        qobject_unref(info);
        qtest_quit(qts);
        return;
    }
    ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");
    check_release(qdict_get_qdict(ev, "data"), "automatic");
    g_test_message("RSS %" PRIu64 " MiB, after the backup %" PRIu64
                   " MiB, after the release %" PRIu64 " MiB", rss0 / MiB,
                   peak / MiB, vm_rss(qts) / MiB);
    /* The backup did fill the heap, and it was given back */
    g_assert_cmpuint(peak, >, rss0 + BACKUP_WORKERS * BACKUP_CHUNK / 2);
    g_assert_cmpuint(vm_rss(qts), <,
                     rss0 + BACKUP_WORKERS * BACKUP_CHUNK / 4);
    /*
     * By this release, where the allocator counts it: with glibc the RCU
     * thread's trim may have been first.
     */
    if (!IS("glibc")) {
        g_assert_cmpuint(get_u64(qdict_get_qdict(ev, "data"), "returned"), >,
                         BACKUP_WORKERS * BACKUP_CHUNK / 4);
    }
    info = query_info(qts);
    g_assert_cmpuint(get_u64(info, "automatic-releases"), ==, 1);
    g_assert_cmpuint(get_u64(info, "manual-releases"), ==, 0);
    qobject_unref(info);
    qobject_unref(ev);
    qtest_quit(qts);
}

/*
 * The jobs of a transaction end together and lead to one automatic
 * release.  Nothing to fill here: null-co disks, no bounce buffer touched.
 * A second release for them would come before the one of a backup run
 * after the first release: when that one has come, count.
 */
static void test_transaction(void)
{
    QTestState *qts = qtest_init("-machine none "
        "-blockdev null-co,node-name=s0,size=67108864 "
        "-blockdev null-co,node-name=t0,size=67108864 "
        "-blockdev null-co,node-name=s1,size=67108864 "
        "-blockdev null-co,node-name=t1,size=67108864");
    QDict *info;

    qtest_qmp_assert_success(qts, "{'execute': 'transaction', 'arguments': {"
        " 'actions': ["
        "  {'type': 'blockdev-backup', 'data': {'job-id': 'j0',"
        "   'device': 's0', 'target': 't0', 'sync': 'full'}},"
        "  {'type': 'blockdev-backup', 'data': {'job-id': 'j1',"
        "   'device': 's1', 'target': 't1', 'sync': 'full'}}]}}");
    qtest_qmp_eventwait(qts, "BLOCK_JOB_COMPLETED");
    qtest_qmp_eventwait(qts, "BLOCK_JOB_COMPLETED");
    if (CAN_RELEASE) {
        qobject_unref(qtest_qmp_eventwait_ref(qts,
                                              "ALLOCATOR_MEMORY_RELEASED"));
    }
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
        " 'arguments': {'job-id': 'j2', 'device': 's0', 'target': 't0',"
        "  'sync': 'full'}}");
    qtest_qmp_eventwait(qts, "BLOCK_JOB_COMPLETED");
    if (CAN_RELEASE) {
        qobject_unref(qtest_qmp_eventwait_ref(qts,
                                              "ALLOCATOR_MEMORY_RELEASED"));
    }
    info = query_info(qts);
    g_assert_cmpuint(get_u64(info, "automatic-releases"), ==,
                     CAN_RELEASE ? 2 : 0);
    g_assert_null(qtest_qmp_event_ref(qts, "ALLOCATOR_MEMORY_RELEASED"));
    qobject_unref(info);
    qtest_quit(qts);
}

/* Wait for the next ALLOCATOR_MEMORY_RELEASED of @trigger */
static QDict *take_release_event(QTestState *qts, const char *trigger)
{
    for (;;) {
        QDict *ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");

        if (!strcmp(qdict_get_str(qdict_get_qdict(ev, "data"), "trigger"),
                    trigger)) {
            return ev;
        }
        qobject_unref(ev);
    }
}

/*
 * HMP's release_free_memory starts a manual release and says it runs in
 * the background; its event follows, and info allocator then shows it.
 * That the main loop goes on meanwhile is measured by bench/qmp-bench.py:
 * a test cannot tell a handler that waited from one that did not.
 */
static void test_hmp(void)
{
    QTestState *qts = start_with_disks("");
    QDict *ev;
    char *out;

    if (!CAN_RELEASE) {
        out = qtest_hmp(qts, "release_free_memory");
        g_assert_nonnull(strstr(out, "cannot return"));
        g_free(out);
        qtest_quit(qts);
        return;
    }
    /* Much to return, for a release that takes a while */
    run_backup(qts);
    out = qtest_hmp(qts, "release_free_memory");
    g_assert_nonnull(strstr(out, "in the background"));
    g_free(out);

    /* The backup's automatic release may come before or after it */
    ev = take_release_event(qts, "manual");
    check_release(qdict_get_qdict(ev, "data"), "manual");
    qobject_unref(ev);
    out = qtest_hmp(qts, "info allocator");
    g_assert_nonnull(strstr(out, "allocator: " EXPECTED_BACKEND));
    g_assert_nonnull(strstr(out, "releases: 1 manual"));
    g_assert_nonnull(strstr(out, "last release: "));
    /* Statistics where they are cheap; glibc's walk the heap */
    g_assert_nonnull(strstr(out, !HAS_STATS ? "statistics: none" :
                            IS("glibc") ? "x-query-allocator-stats" :
                            "allocated:"));
    g_free(out);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/allocator/query", test_query);
    qtest_add_func("/allocator/release", test_release);
    qtest_add_func("/allocator/backup", test_backup);
    qtest_add_func("/allocator/transaction", test_transaction);
    qtest_add_func("/allocator/hmp", test_hmp);
    ret = g_test_run();
    if (source_path) {
        unlink(source_path);
        g_free(source_path);
    }
    return ret;
}
