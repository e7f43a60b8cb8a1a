/*
 * QTest for the automatic release of free allocator memory after backups
 * and for the allocator-policy object
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qemu/units.h"

#define SOURCE_SIZE (128 * MiB)
#define SOURCES 3

/* How far above its pre-backup value RSS may stay after the release */
#define RSS_KEPT_MAX (32 * MiB)

#define CAN_RELEASE (strcmp(qemu_allocator_backend, "system") != 0)

#if defined(CONFIG_TCMALLOC)
static const char *qemu_allocator_backend = "tcmalloc";
#elif defined(CONFIG_JEMALLOC)
static const char *qemu_allocator_backend = "jemalloc";
#elif defined(CONFIG_MALLOC_TRIM)
static const char *qemu_allocator_backend = "glibc";
#else
static const char *qemu_allocator_backend = "system";
#endif

static char *tmp_dir;
static char *sources[SOURCES];

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
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-query-allocator-stats'}");
    QDict *info = qdict_get_qdict(rsp, "return");

    g_assert_nonnull(info);
    qobject_ref(info);
    qobject_unref(rsp);
    return info;
}

/*
 * Wait until no automatic release is pending any more; return the info
 * then.  Bounded: a release that never comes fails the test.
 */
static QDict *wait_settled(QTestState *qts)
{
    int i;

    for (i = 0; i < 1000; i++) {
        QDict *info = query_info(qts);

        if (!qdict_get_bool(info, "automatic-pending") &&
            !qdict_get_bool(info, "release-running")) {
            return info;
        }
        qobject_unref(info);
        g_usleep(20 * 1000);
    }
    g_error("an automatic release stayed pending for 20 s");
}

static uint64_t automatic_releases(QDict *info)
{
    return get_u64(qdict_get_qdict(info, "releases"), "automatic");
}

static void add_pair(QTestState *qts, int i, const char *target_path)
{
    g_autofree char *src = g_strdup_printf("src%d", i);
    g_autofree char *dst = g_strdup_printf("dst%d", i);

    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
                             " 'driver': 'raw', 'node-name': %s,"
                             " 'file': { 'driver': 'file',"
                             "           'filename': %s } } }",
                             src, sources[i]);
    if (target_path) {
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add',"
                                 " 'arguments': { 'driver': 'raw',"
                                 " 'node-name': %s, 'file': {"
                                 " 'driver': 'file', 'filename': %s } } }",
                                 dst, target_path);
    } else {
        /* slow: every worker's buffer stays allocated at once */
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add',"
                                 " 'arguments': { 'driver': 'null-co',"
                                 " 'node-name': %s, 'latency-ns': 50000000,"
                                 " 'size': %" PRIu64 " } }",
                                 dst, (uint64_t)SOURCE_SIZE);
    }
}

#define BACKUP_ARGS \
    " 'sync': 'full', 'x-perf': { 'use-copy-range': false," \
    " 'max-workers': 2048, 'max-chunk': 65536 }"

static void backup(QTestState *qts, int i)
{
    g_autofree char *job = g_strdup_printf("job%d", i);
    g_autofree char *src = g_strdup_printf("src%d", i);
    g_autofree char *dst = g_strdup_printf("dst%d", i);
    QDict *ev;

    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
                             " 'arguments': { 'job-id': %s, 'device': %s,"
                             " 'target': %s," BACKUP_ARGS " } }",
                             job, src, dst);
    ev = qtest_qmp_eventwait_ref(qts, "BLOCK_JOB_COMPLETED");
    g_assert_false(qdict_haskey(qdict_get_qdict(ev, "data"), "error"));
    qobject_unref(ev);
}

static void assert_files_equal(const char *a, const char *b)
{
    g_autofree char *da = NULL, *db = NULL;
    gsize la, lb;

    g_assert_true(g_file_get_contents(a, &da, &la, NULL));
    g_assert_true(g_file_get_contents(b, &db, &lb, NULL));
    g_assert_cmpuint(la, ==, lb);
    g_assert_true(memcmp(da, db, la) == 0);
}

static char *make_target(const char *name)
{
    char *path = g_strdup_printf("%s/%s", tmp_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, SOURCE_SIZE), ==, 0);
    close(fd);
    return path;
}

/*
 * A backup to a file: QEMU returns the memory once, by itself; RSS comes
 * back near where it was; the copy is exact.
 */
static void test_after_backup(void)
{
    g_autofree char *target = make_target("target0.raw");
    QTestState *qts;
    QDict *ev, *info, *data;
    uint64_t rss_before, rss_after;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    /* Release whatever there is, to count releases exactly */
    qts = qtest_init("-machine none -nodefaults "
                     "-object allocator-policy,id=policy,min-releasable=0,"
                     "idle-interval=0");
    add_pair(qts, 0, target);
    rss_before = vm_rss(qts);
    backup(qts, 0);

    ev = qtest_qmp_eventwait_ref(qts, "ALLOCATOR_MEMORY_RELEASED");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "trigger"), ==, "automatic");
    g_assert_cmpstr(qdict_get_str(data, "backend"), ==,
                    qemu_allocator_backend);
    info = wait_settled(qts);
    g_assert_cmpuint(automatic_releases(info), ==, 1);
    g_assert_cmpuint(get_u64(qdict_get_qdict(info, "releases"), "manual"),
                     ==, 0);
    g_assert_true(qobject_is_equal(QOBJECT(qdict_get_qdict(info,
                                                           "last-release")),
                                   QOBJECT(data)));
    rss_after = vm_rss(qts);
    g_test_message("RSS before the backup %" PRIu64 " MiB, after the "
                   "automatic release %" PRIu64 " MiB (%" PRIu64 " MiB "
                   "returned)", rss_before / MiB, rss_after / MiB,
                   get_u64(data, "returned") / MiB);
    g_assert_cmpuint(rss_after, <=, rss_before + RSS_KEPT_MAX);
    qobject_unref(info);
    qobject_unref(ev);
    qtest_quit(qts);

    /* Nothing lost */
    assert_files_equal(sources[0], target);
    unlink(target);
}

/* The jobs of a transaction end together: one release for all of them. */
static void test_transaction(void)
{
    QTestState *qts;
    QDict *info;
    int i, done = 0;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = qtest_init("-machine none -nodefaults "
                     "-object allocator-policy,id=policy,min-releasable=0,"
                     "idle-interval=0");
    for (i = 0; i < SOURCES; i++) {
        add_pair(qts, i, NULL);
    }
    qtest_qmp_assert_success(qts, "{'execute': 'transaction', 'arguments': {"
        " 'actions': ["
        "  { 'type': 'blockdev-backup', 'data': { 'job-id': 'job0',"
        "    'device': 'src0', 'target': 'dst0'," BACKUP_ARGS " } },"
        "  { 'type': 'blockdev-backup', 'data': { 'job-id': 'job1',"
        "    'device': 'src1', 'target': 'dst1'," BACKUP_ARGS " } },"
        "  { 'type': 'blockdev-backup', 'data': { 'job-id': 'job2',"
        "    'device': 'src2', 'target': 'dst2'," BACKUP_ARGS " } } ],"
        " 'properties': { 'completion-mode': 'grouped' } } }");
    while (done < SOURCES) {
        qobject_unref(qtest_qmp_eventwait_ref(qts, "BLOCK_JOB_COMPLETED"));
        done++;
    }
    info = wait_settled(qts);
    g_assert_cmpuint(automatic_releases(info), ==, 1);
    qobject_unref(info);
    qtest_quit(qts);
}

/* A cancelled backup leaves its buffers too: still released. */
static void test_cancel(void)
{
    QTestState *qts;
    QDict *info;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = qtest_init("-machine none -nodefaults "
                     "-object allocator-policy,id=policy,min-releasable=0,"
                     "idle-interval=0");
    add_pair(qts, 0, NULL);
    /* At 1 byte/s the job cannot finish before the cancel arrives */
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
                             " 'arguments': { 'job-id': 'job0',"
                             " 'device': 'src0', 'target': 'dst0',"
                             " 'speed': 1, " BACKUP_ARGS " } }");
    qtest_qmp_assert_success(qts, "{'execute': 'block-job-cancel',"
                             " 'arguments': { 'device': 'job0' } }");
    qobject_unref(qtest_qmp_eventwait_ref(qts, "BLOCK_JOB_CANCELLED"));
    info = wait_settled(qts);
    g_assert_cmpuint(automatic_releases(info), ==, 1);
    qobject_unref(info);
    qtest_quit(qts);
}

/* Policy off: nothing automatic, and the stats say so; manual still works */
static void test_policy_off(void)
{
    QTestState *qts;
    QDict *info, *rsp;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = qtest_init("-machine none -nodefaults "
                     "-object allocator-policy,id=policy");
    qtest_qmp_assert_success(qts, "{'execute': 'qom-set', 'arguments': {"
                             " 'path': '/objects/policy',"
                             " 'property': 'release-after-backup',"
                             " 'value': false } }");
    add_pair(qts, 0, NULL);
    backup(qts, 0);
    info = wait_settled(qts);
    g_assert_cmpuint(automatic_releases(info), ==, 0);
    g_assert_cmpuint(get_u64(info, "automatic-skipped"), ==, 1);
    g_assert_nonnull(strstr(qdict_get_str(info, "last-skip-reason"),
                            "disabled"));
    g_assert_false(qdict_get_bool(qdict_get_qdict(info, "policy"),
                                  "release-after-backup"));
    qobject_unref(info);

    rsp = qtest_qmp(qts, "{'execute': 'x-release-free-memory'}");
    g_assert_true(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    info = query_info(qts);
    g_assert_cmpuint(get_u64(qdict_get_qdict(info, "releases"), "manual"),
                     ==, 1);
    qobject_unref(info);
    qtest_quit(qts);
}

/* More asked for than there is: nothing done, and the stats say why. */
static void test_threshold(void)
{
    QTestState *qts;
    QDict *info;

    if (!CAN_RELEASE) {
        g_test_skip("this allocator cannot release");
        return;
    }
    qts = qtest_init("-machine none -nodefaults "
                     "-object allocator-policy,id=policy,"
                     "min-releasable=1099511627776");
    add_pair(qts, 0, NULL);
    backup(qts, 0);
    info = wait_settled(qts);
    g_assert_cmpuint(automatic_releases(info), ==, 0);
    g_assert_cmpuint(get_u64(info, "automatic-skipped"), ==, 1);
    g_assert_nonnull(strstr(qdict_get_str(info, "last-skip-reason"),
                            "below the minimum of 1099511627776"));
    qobject_unref(info);
    qtest_quit(qts);
}

static void expect_set_error(QTestState *qts, const char *prop,
                             const char *value_json, const char *what)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-set', 'arguments': {"
                           " 'path': '/objects/policy', 'property': %s,"
                           " 'value': %p } }", prop,
                           qobject_from_json(value_json, &error_abort));
    QDict *err = qdict_get_qdict(rsp, "error");

    g_assert_nonnull(err);
    if (!strstr(qdict_get_str(err, "desc"), what)) {
        g_test_message("error '%s' does not mention '%s'",
                       qdict_get_str(err, "desc"), what);
        g_test_fail();
    }
    qobject_unref(rsp);
}

/* Bad policy values are refused clearly; the old policy stays. */
static void test_policy_bad_values(void)
{
    QTestState *qts = qtest_init("-machine none -nodefaults "
                                 "-object allocator-policy,id=policy,"
                                 "min-releasable=64M,idle-interval=500");
    QDict *rsp, *policy, *info;

    expect_set_error(qts, "min-releasable", "-1", "at most");
    expect_set_error(qts, "min-releasable", "'lots'", "min-releasable");
    expect_set_error(qts, "idle-interval", "4000000", "at most");
    expect_set_error(qts, "idle-interval", "-5", "idle-interval");
    expect_set_error(qts, "release-after-backup", "'yes'",
                     "release-after-backup");
    expect_set_error(qts, "bogus", "1", "bogus");

    rsp = qtest_qmp(qts, "{'execute': 'object-add', 'arguments': {"
                    " 'qom-type': 'allocator-policy', 'id': 'second' } }");
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                          "desc"), "already"));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'object-add', 'arguments': {"
                    " 'qom-type': 'allocator-policy', 'id': 'third',"
                    " 'min-releasable': -7 } }");
    g_assert_true(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);

    info = query_info(qts);
    policy = qdict_get_qdict(info, "policy");
    g_assert_cmpuint(get_u64(policy, "min-releasable"), ==, 64 * MiB);
    g_assert_cmpuint(get_u64(policy, "idle-interval"), ==, 500);
    g_assert_true(qdict_get_bool(policy, "release-after-backup"));
    qobject_unref(info);

    /* Deleting the object restores the defaults */
    qtest_qmp_assert_success(qts, "{'execute': 'object-del', 'arguments': {"
                             " 'id': 'policy' } }");
    info = query_info(qts);
    policy = qdict_get_qdict(info, "policy");
    g_assert_cmpuint(get_u64(policy, "min-releasable"), ==, 4 * MiB);
    g_assert_cmpuint(get_u64(policy, "idle-interval"), ==, 1000);
    qobject_unref(info);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *block = g_malloc(MiB);
    int i, ret;
    uint64_t j;

    g_test_init(&argc, &argv, NULL);
    tmp_dir = g_dir_make_tmp("allocator-backup-test-XXXXXX", &err);
    g_assert_no_error(err);
    for (i = 0; i < SOURCES; i++) {
        int fd;

        sources[i] = g_strdup_printf("%s/source%d.raw", tmp_dir, i);
        fd = open(sources[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        g_assert_cmpint(fd, >=, 0);
        for (j = 0; j < SOURCE_SIZE / MiB; j++) {
            memset(block, 0x21 + (i * 7 + j) % 199, MiB);
            block[j % MiB] = i;    /* no two MiB alike */
            g_assert_cmpint(write(fd, block, MiB), ==, MiB);
        }
        close(fd);
    }

    qtest_add_func("/allocator/backup/release", test_after_backup);
    qtest_add_func("/allocator/backup/transaction", test_transaction);
    qtest_add_func("/allocator/backup/cancel", test_cancel);
    qtest_add_func("/allocator/backup/policy-off", test_policy_off);
    qtest_add_func("/allocator/backup/threshold", test_threshold);
    qtest_add_func("/allocator/policy/bad-values", test_policy_bad_values);
    ret = g_test_run();

    for (i = 0; i < SOURCES; i++) {
        unlink(sources[i]);
        g_free(sources[i]);
    }
    rmdir(tmp_dir);
    g_free(tmp_dir);
    return ret;
}
