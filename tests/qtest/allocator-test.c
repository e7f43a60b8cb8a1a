/*
 * QTest for x-release-free-memory, x-query-allocator-stats, the
 * ALLOCATOR_MEMORY_RELEASED event, the allocator query-stats provider and
 * their HMP commands
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * QEMU runs with the allocator this build links.  The heap is filled the
 * way it is in production: a backup job with many parallel workers reads
 * a file into its bounce buffers, then frees them.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qlist.h"
#include "qemu/sockets.h"
#include "qemu/units.h"
#include "qapi/error.h"

#if defined(CONFIG_TCMALLOC)
#define EXPECTED_BACKEND "tcmalloc"
#elif defined(CONFIG_JEMALLOC)
#define EXPECTED_BACKEND "jemalloc"
#elif defined(CONFIG_MALLOC_TRIM)
#define EXPECTED_BACKEND "glibc"
#else
#define EXPECTED_BACKEND "system"
#endif

#define CAN_RELEASE (strcmp(EXPECTED_BACKEND, "system") != 0)
#define CAN_LIMIT (strcmp(EXPECTED_BACKEND, "tcmalloc") == 0)

#define SOURCE_SIZE (256 * MiB)

/*
 * For the tests of manual releases, after a backup: neither the automatic
 * release nor the RCU thread's idle release may return the memory first.
 */
#define NO_AUTO_RELEASE \
    "-object allocator-policy,id=policy,release-after-backup=off," \
    "idle-interval=0"

/* Memory moves while figures are read: compare with this much slack. */
#define RSS_SLACK (8 * MiB)

static char *source_path;
static char *tmp_dir;

static QTestState *start_qemu(const char *extra)
{
    return qtest_initf("-machine none -nodefaults %s", extra ? extra : "");
}

/* An unsigned number from a QMP answer; it must be there */
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

static void assert_within(uint64_t value, uint64_t expected, uint64_t slack)
{
    if (value + slack < expected || value > expected + slack) {
        g_test_message("%" PRIu64 " is not within %" PRIu64 " of %"
                       PRIu64, value, slack, expected);
        g_test_fail();
    }
}

static void assert_still_answers(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-status'}");

    g_assert_true(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

static QDict *query_info(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-query-allocator-stats'}");
    QDict *info = qdict_get_qdict(rsp, "return");

    g_assert_nonnull(info);
    qobject_ref(info);
    qobject_unref(rsp);
    return info;
}

static void check_stats(QDict *stats)
{
    QList *figures = qdict_get_qlist(stats, "figures");
    const QListEntry *e;
    uint64_t allocated, held, free, releasable;

    g_assert_cmpstr(qdict_get_str(stats, "backend"), ==, EXPECTED_BACKEND);
    allocated = get_u64(stats, "allocated");
    held = get_u64(stats, "held");
    free = get_u64(stats, "free");
    releasable = get_u64(stats, "releasable");
    g_assert_cmpuint(get_u64(stats, "rss"), >, 0);
    g_assert_cmpuint(held, ==, allocated + free);
    g_assert_cmpuint(releasable, <=, free);
    /* glibc does not count what it gave back; the others do */
    g_assert_cmpint(qdict_haskey(stats, "returned"), ==,
                    CAN_RELEASE && strcmp(EXPECTED_BACKEND, "glibc"));
    g_assert_nonnull(figures);
    QLIST_FOREACH_ENTRY(figures, e) {
        QDict *f = qobject_to(QDict, qlist_entry_obj(e));

        g_assert_nonnull(f);
        g_assert_true(strlen(qdict_get_str(f, "name")) > 0);
        g_assert_nonnull(qdict_get(f, "value"));
    }
}

static void check_release(QDict *r, const char *trigger)
{
    g_assert_cmpstr(qdict_get_str(r, "backend"), ==, EXPECTED_BACKEND);
    g_assert_cmpstr(qdict_get_str(r, "trigger"), ==, trigger);
    g_assert_cmpint(qdict_get_bool(r, "returned-from-rss"), ==,
                    !strcmp(EXPECTED_BACKEND, "glibc"));
    g_assert_cmpuint(get_u64(r, "rss-before"), >, 0);
    g_assert_cmpuint(get_u64(r, "rss-after"), >, 0);
    g_assert_cmpuint(get_u64(r, "steps"), >=, 1);
    g_assert_cmpuint(get_u64(r, "longest-step-us"), <=,
                     get_u64(r, "duration-us"));
    get_u64(r, "returned");
    qdict_get_bool(r, "shared");
}

static QDict *release_ok(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory'}");
    QDict *ret = qdict_get_qdict(rsp, "return");

    g_assert_nonnull(ret);
    qobject_ref(ret);
    qobject_unref(rsp);
    return ret;
}

/* The figures, their types, and what one release does to the counters. */
static void test_shapes(void)
{
    QTestState *qts = start_qemu(NULL);
    QDict *info = query_info(qts);
    QDict *c0 = qdict_get_qdict(info, "releases");
    QDict *ret, *rel, *ev, *info2, *c1, *last;

    check_stats(qdict_get_qdict(info, "stats"));
    g_assert_cmpint(qdict_get_bool(info, "can-release"), ==, CAN_RELEASE);
    g_assert_cmpint(qdict_get_bool(info, "can-limit"), ==, CAN_LIMIT);
    g_assert_false(qdict_haskey(info, "last-release"));
    g_assert_cmpuint(get_u64(c0, "manual"), ==, 0);
    g_assert_cmpuint(get_u64(c0, "automatic"), ==, 0);

    if (!CAN_RELEASE) {
        QDict *rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory'}");

        qmp_expect_error_and_unref(rsp, "CommandNotFound");
        qobject_unref(info);
        qtest_quit(qts);
        return;
    }

    ret = release_ok(qts);
    rel = qdict_get_qdict(ret, "release");
    check_release(rel, "manual");
    g_assert_false(qdict_get_bool(rel, "shared"));
    check_stats(qdict_get_qdict(ret, "stats"));

    /* The event carries exactly the command's figures */
    ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");
    g_assert_true(qobject_is_equal(QOBJECT(qdict_get_qdict(ev, "data")),
                                   QOBJECT(rel)));
    qobject_unref(ev);

    /* One release counted once, with its bytes and time */
    info2 = query_info(qts);
    c1 = qdict_get_qdict(info2, "releases");
    g_assert_cmpuint(get_u64(c1, "manual"), ==,
                     get_u64(c0, "manual") + 1);
    g_assert_cmpuint(get_u64(c1, "automatic"), ==,
                     get_u64(c0, "automatic"));
    g_assert_cmpuint(get_u64(c1, "returned"), ==,
                     get_u64(c0, "returned") +
                     get_u64(rel, "returned"));
    g_assert_cmpuint(get_u64(c1, "time-us"), >=,
                     get_u64(c0, "time-us") +
                     get_u64(rel, "duration-us"));
    last = qdict_get_qdict(info2, "last-release");
    g_assert_true(qobject_is_equal(QOBJECT(last), QOBJECT(rel)));
    qobject_unref(info2);
    qobject_unref(ret);

    /* A second one: counted again, totals keep adding up */
    ret = release_ok(qts);
    info2 = query_info(qts);
    c1 = qdict_get_qdict(info2, "releases");
    g_assert_cmpuint(get_u64(c1, "manual"), ==,
                     get_u64(c0, "manual") + 2);
    qobject_unref(info2);
    qobject_unref(ret);
    qobject_unref(info);
    qtest_quit(qts);
}

static bool stats_list_has(QList *list, const char *name)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(list, e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(d, "name"), name)) {
            return true;
        }
    }
    return false;
}

/* query-stats serves the same figures, with their schema. */
static void test_query_stats(void)
{
    static const char *const names[] = {
        "allocated", "held", "free", "releasable", "rss",
        "releases-manual", "releases-automatic", "releases-idle",
        "returned-total", "release-time",
    };
    QTestState *qts = start_qemu(NULL);
    QDict *rsp, *res;
    QList *list;
    int i;

    rsp = qtest_qmp(qts, "{'execute': 'query-stats', 'arguments': {"
                    " 'target': 'vm', 'providers': ["
                    "  { 'provider': 'allocator' } ] } }");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 1);
    res = qobject_to(QDict, qlist_peek(list));
    g_assert_cmpstr(qdict_get_str(res, "provider"), ==, "allocator");
    for (i = 0; i < ARRAY_SIZE(names); i++) {
        g_assert_true(stats_list_has(qdict_get_qlist(res, "stats"),
                                     names[i]));
    }
    qobject_unref(rsp);

    /* A name filter returns just that */
    rsp = qtest_qmp(qts, "{'execute': 'query-stats', 'arguments': {"
                    " 'target': 'vm', 'providers': ["
                    "  { 'provider': 'allocator', 'names': ['rss'] } ] } }");
    list = qdict_get_qlist(rsp, "return");
    res = qobject_to(QDict, qlist_peek(list));
    g_assert_cmpint(qlist_size(qdict_get_qlist(res, "stats")), ==, 1);
    g_assert_true(stats_list_has(qdict_get_qlist(res, "stats"), "rss"));
    qobject_unref(rsp);

    rsp = qtest_qmp(qts, "{'execute': 'query-stats-schemas', 'arguments': {"
                    " 'provider': 'allocator' } }");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 1);
    res = qobject_to(QDict, qlist_peek(list));
    g_assert_cmpstr(qdict_get_str(res, "target"), ==, "vm");
    for (i = 0; i < ARRAY_SIZE(names); i++) {
        g_assert_true(stats_list_has(qdict_get_qlist(res, "stats"),
                                     names[i]));
    }
    g_assert_true(stats_list_has(qdict_get_qlist(res, "stats"), "returned"));
    qobject_unref(rsp);
    qtest_quit(qts);
}

static void expect_error(QTestState *qts, const char *args, const char *what)
{
    QObject *arguments = qobject_from_json(args, &error_abort);
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory',"
                           " 'arguments': %p}", arguments);
    QDict *err = qdict_get_qdict(rsp, "error");

    g_assert_nonnull(err);
    g_assert_cmpstr(qdict_get_str(err, "class"), ==, "GenericError");
    if (!strstr(qdict_get_str(err, "desc"), what)) {
        g_test_message("error '%s' does not mention '%s'",
                       qdict_get_str(err, "desc"), what);
        g_test_fail();
    }
    qobject_unref(rsp);
    assert_still_answers(qts);
}

/* Wrong arguments are refused clearly, and QEMU carries on. */
static void test_bad_input(void)
{
    QTestState *qts;
    QDict *info;
    char *out;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = start_qemu(NULL);
    expect_error(qts, "{'max-bytes': 'lots'}", "max-bytes");
    expect_error(qts, "{'max-bytes': -1}", "at most");
    expect_error(qts, "{'max-bytes': 18446744073709551615}", "at most");
    expect_error(qts, "{'max-bytes': 1.5}", "max-bytes");
    expect_error(qts, "{'max-bytes': 0}", "greater than 0");
    expect_error(qts, "{'bytes': 4096}", "'bytes' is unexpected");
    if (CAN_LIMIT) {
        QDict *rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory',"
                               " 'arguments': {'max-bytes': 1}}");

        g_assert_true(qdict_haskey(rsp, "return"));
        qobject_unref(rsp);
    } else {
        expect_error(qts, "{'max-bytes': 1048576}", "cannot limit");
    }
    out = qtest_hmp(qts, "release_free_memory lots");
    g_assert_nonnull(strstr(out, "invalid size"));
    g_free(out);
    out = qtest_hmp(qts, "release_free_memory 0");
    g_assert_nonnull(strstr(out, "greater than 0"));
    g_free(out);

    /* None of these released anything, except the one allowed */
    info = query_info(qts);
    g_assert_cmpuint(get_u64(qdict_get_qdict(info, "releases"),
                                    "manual"), ==, CAN_LIMIT ? 1 : 0);
    qobject_unref(info);
    qtest_quit(qts);
}

/* The same through HMP: readable, and the same counters. */
static void test_hmp(void)
{
    QTestState *qts = start_qemu(NULL);
    char *out;

    out = qtest_hmp(qts, "info allocator");
    g_assert_nonnull(strstr(out, "allocator: " EXPECTED_BACKEND));
    g_assert_nonnull(strstr(out, "RSS:"));
    g_assert_nonnull(strstr(out, "releases: 0 manual, 0 automatic"));
    g_free(out);
    if (CAN_RELEASE) {
        out = qtest_hmp(qts, "release_free_memory");
        g_assert_nonnull(strstr(out, "manual release: returned"));
        g_free(out);
        out = qtest_hmp(qts, "info allocator");
        g_assert_nonnull(strstr(out, "releases: 1 manual"));
        g_assert_nonnull(strstr(out, "last manual release"));
        g_free(out);
    }
    qtest_quit(qts);
}

static void add_backup_nodes(QTestState *qts)
{
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
                             " 'driver': 'raw', 'node-name': 'src',"
                             " 'file': { 'driver': 'file',"
                             "           'filename': %s } } }", source_path);
    /* A slow target keeps every worker's buffer allocated at once */
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
                             " 'driver': 'null-co', 'node-name': 'dst',"
                             " 'latency-ns': 50000000,"
                             " 'size': %" PRIu64 " } }", (uint64_t)SOURCE_SIZE);
}

/*
 * A backup with 2048 parallel workers of 64 KiB: QEMU allocates many
 * bounce buffers, fills them from the source, and frees them.
 */
static void run_backup(QTestState *qts, int n)
{
    g_autofree char *job = g_strdup_printf("job%d", n);
    QDict *ev;

    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
                             " 'arguments': { 'job-id': %s,"
                             " 'device': 'src', 'target': 'dst',"
                             " 'sync': 'full',"
                             " 'x-perf': { 'use-copy-range': false,"
                             "             'max-workers': 2048,"
                             "             'max-chunk': 65536 } } }", job);
    ev = qtest_qmp_eventwait_ref(qts, "BLOCK_JOB_COMPLETED");
    g_assert_false(qdict_haskey(qdict_get_qdict(ev, "data"), "error"));
    qobject_unref(ev);
}

/* After real work, a release brings RSS down by what it promised. */
static void test_reclaim(void)
{
    QTestState *qts;
    QDict *info, *ret, *rel;
    uint64_t releasable, rss_before, rss_after, dropped;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = start_qemu(NO_AUTO_RELEASE);
    add_backup_nodes(qts);
    run_backup(qts, 0);

    /* Our window opens before the figures are taken: see below */
    rss_before = vm_rss(qts);
    info = query_info(qts);
    releasable = get_u64(qdict_get_qdict(info, "stats"), "releasable");
    qobject_unref(info);
    g_test_message("after the backup: %" PRIu64 " MiB releasable",
                   releasable / MiB);
    /* The workload left enough behind, or this test proves nothing */
    g_assert_cmpuint(releasable, >=, 32 * MiB);

    ret = release_ok(qts);
    rss_after = vm_rss(qts);
    rel = qdict_get_qdict(ret, "release");
    check_release(rel, "manual");
    g_test_message("released %" PRIu64 " MiB in %" PRIu64 " us; RSS %"
                   PRIu64 " -> %" PRIu64 " MiB",
                   get_u64(rel, "returned") / MiB,
                   get_u64(rel, "duration-us"), rss_before / MiB,
                   rss_after / MiB);
    /* The kernel saw it go: RSS fell by most of what was releasable */
    g_assert_cmpuint(rss_after, <, rss_before);
    dropped = rss_before - rss_after;
    g_assert_cmpuint(dropped, >=, releasable * 3 / 4);
    /*
     * The release's own RSS readings lie within the window of ours, and it
     * cannot claim more than the kernel saw go.  Not "as much": glibc
     * also gives memory back by itself (top-of-heap trims on free, heaps
     * of other threads' arenas), which can happen inside our window but
     * before the release starts; its "returned" is the RSS it saw drop.
     */
    g_assert_cmpuint(get_u64(rel, "rss-before"), <=, rss_before + RSS_SLACK);
    g_assert_cmpuint(get_u64(rel, "rss-after") + RSS_SLACK, >=, rss_after);
    g_assert_cmpuint(get_u64(rel, "returned"), <=, dropped + RSS_SLACK);
    if (strcmp(EXPECTED_BACKEND, "glibc") != 0) {
        /* These allocators count what they return, and nothing else does */
        assert_within(get_u64(rel, "returned"), dropped,
                      dropped / 10 + RSS_SLACK);
    }
    qobject_unref(ret);
    qtest_quit(qts);
}

/* Send a line to the HMP monitor, return what it printed up to the prompt */
static char *hmp_socket_cmd(int fd, const char *cmd)
{
    g_autoptr(GString) out = g_string_new(NULL);
    char buf[4096];

    if (cmd) {
        g_assert_cmpint(write(fd, cmd, strlen(cmd)), ==, strlen(cmd));
        g_assert_cmpint(write(fd, "\n", 1), ==, 1);
    }
    while (!g_str_has_suffix(out->str, "(qemu) ")) {
        ssize_t n = read(fd, buf, sizeof(buf));

        g_assert_cmpint(n, >, 0);
        g_string_append_len(out, buf, n);
    }
    return g_strdup(out->str);
}

/*
 * While a large release runs in its worker thread, the main loop keeps
 * serving: a human monitor answers, and sees the release in progress.
 * (QMP monitors share one dispatcher: their commands wait for it, as for
 * any command.)
 */
static void test_responsive(void)
{
    g_autofree char *hmp_path = g_strdup_printf("%s/hmp.sock", tmp_dir);
    g_autofree char *args = g_strdup_printf(
        "-chardev socket,id=hmp0,path=%s,server=on,wait=off "
        "-mon chardev=hmp0,mode=readline " NO_AUTO_RELEASE, hmp_path);
    QTestState *qts;
    QDict *rsp;
    int fd, attempt, polls = 0, seen_running = 0;
    char *out;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = start_qemu(args);
    add_backup_nodes(qts);
    fd = unix_connect(hmp_path, &error_abort);
    g_free(hmp_socket_cmd(fd, NULL));

    /*
     * A release of this size takes milliseconds and an HMP round trip a
     * fraction of one; should one attempt be over before the first poll,
     * fill the heap and try again.
     */
    for (attempt = 0; attempt < 3 && !seen_running; attempt++) {
        bool done = false;

        run_backup(qts, attempt);
        qtest_qmp_send(qts, "{'execute': 'x-release-free-memory'}");
        while (!done) {
            g_autofree char *expect = g_strdup_printf("releases: %d manual",
                                                      attempt + 1);

            out = hmp_socket_cmd(fd, "info allocator");
            polls++;
            seen_running += !!strstr(out, "a release is in progress");
            done = strstr(out, expect) != NULL;
            g_free(out);
        }
        rsp = qtest_qmp_receive(qts);
        g_assert_true(qdict_haskey(rsp, "return"));
        qobject_unref(rsp);
    }
    g_test_message("%d HMP answers in %d attempts, %d while a release ran",
                   polls, attempt, seen_running);
    if (!strcmp(EXPECTED_BACKEND, "glibc")) {
        /*
         * malloc_trim() holds each arena's lock while it trims it: the
         * main loop, which allocates from the main arena, waits for that
         * part of the release.  The HMP monitor answered all the same.
         */
        g_assert_cmpint(polls, >=, attempt);
    } else {
        g_assert_cmpint(seen_running, >, 0);
    }
    close(fd);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *pattern = NULL;
    g_autofree char *hmp = NULL;
    int fd, ret;
    uint64_t i;

    g_test_init(&argc, &argv, NULL);
    /*
     * glibc also trims by itself when a free() leaves enough at the top of
     * a heap, depending on the order of frees: in the QEMUs we start it
     * does not, so that how much stays cached after a backup does not
     * depend on timing.  (Read by glibc when QEMU starts.)
     */
    g_setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967296",
             true);

    tmp_dir = g_dir_make_tmp("allocator-test-XXXXXX", &err);
    g_assert_no_error(err);
    source_path = g_strdup_printf("%s/source.raw", tmp_dir);
    fd = open(source_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    g_assert_cmpint(fd, >=, 0);
    pattern = g_malloc(MiB);
    for (i = 0; i < SOURCE_SIZE / MiB; i++) {
        memset(pattern, 0x11 + i % 200, MiB);
        g_assert_cmpint(write(fd, pattern, MiB), ==, MiB);
    }
    close(fd);

    qtest_add_func("/allocator/qmp/shapes", test_shapes);
    qtest_add_func("/allocator/qmp/query-stats", test_query_stats);
    qtest_add_func("/allocator/qmp/bad-input", test_bad_input);
    qtest_add_func("/allocator/hmp", test_hmp);
    qtest_add_func("/allocator/reclaim", test_reclaim);
    qtest_add_func("/allocator/responsive", test_responsive);

    ret = g_test_run();
    unlink(source_path);
    hmp = g_strdup_printf("%s/hmp.sock", tmp_dir);
    unlink(hmp);
    rmdir(tmp_dir);
    g_free(source_path);
    g_free(tmp_dir);
    return ret;
}
