/*
 * Concurrency torture for releasing free allocator memory: several QMP
 * monitors release and query in a loop while backup jobs start, complete
 * and get cancelled, and the policy changes underneath.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Bounded in iterations, not in time.  At the end: QEMU still answers,
 * the counters agree with what the monitors were told, and every backup
 * that completed produced an exact copy.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/units.h"

#define MONITORS 3
#define REQUESTS 60
#define BACKUPS 12
#define SOURCE_SIZE (32 * MiB)

static char *tmp_dir;

typedef struct Client {
    QemuThread thread;
    char *path;
    int fd;
    GString *buf;
    /* what this monitor was told */
    uint64_t ran;
    uint64_t shared;
    uint64_t returned;
    uint64_t queries;
    bool can_release;
    char *failure;
} Client;

/* Next non-event message from a raw QMP connection */
static QDict *client_receive(Client *c)
{
    for (;;) {
        char *nl = strchr(c->buf->str, '\n');
        char chunk[65536];
        ssize_t n;

        if (nl) {
            g_autofree char *line = g_strndup(c->buf->str, nl - c->buf->str);
            QDict *msg;

            g_string_erase(c->buf, 0, nl - c->buf->str + 1);
            msg = qobject_to(QDict, qobject_from_json(line, &error_abort));
            g_assert_nonnull(msg);
            if (qdict_haskey(msg, "event")) {
                qobject_unref(msg);
                continue;
            }
            return msg;
        }
        n = read(c->fd, chunk, sizeof(chunk));
        g_assert_cmpint(n, >, 0);
        g_string_append_len(c->buf, chunk, n);
    }
}

static QDict *client_cmd(Client *c, const char *json)
{
    size_t len = strlen(json);

    g_assert_cmpint(write(c->fd, json, len), ==, len);
    return client_receive(c);
}

static uint64_t get_u64(QDict *d, const char *key)
{
    QNum *n = qobject_to(QNum, qdict_get(d, key));
    uint64_t v;

    if (!n || !qnum_get_try_uint(n, &v)) {
        g_error("'%s' is missing or not an unsigned number", key);
    }
    return v;
}

static void *client_run(void *opaque)
{
    Client *c = opaque;
    int i;

    c->fd = unix_connect(c->path, &error_abort);
    c->buf = g_string_new(NULL);
    qobject_unref(client_receive(c));   /* greeting */
    qobject_unref(client_cmd(c, "{'execute': 'qmp_capabilities'}\n"));
    for (i = 0; i < REQUESTS && !c->failure; i++) {
        bool release = c->can_release && i % 2 == 0;
        QDict *rsp = client_cmd(c, release ?
                                "{'execute': 'x-release-free-memory'}\n" :
                                "{'execute': 'x-query-allocator-stats'}\n");
        QDict *ret = qdict_get_qdict(rsp, "return");

        if (!ret) {
            c->failure = g_strdup_printf("request %d got no answer", i);
        } else if (release) {
            QDict *r = qdict_get_qdict(ret, "release");

            if (qdict_get_bool(r, "shared")) {
                c->shared++;
            } else {
                c->ran++;
                c->returned += get_u64(r, "returned");
            }
        } else {
            c->queries++;
        }
        qobject_unref(rsp);
    }
    close(c->fd);
    g_string_free(c->buf, true);
    return NULL;
}

static char *make_file(const char *name, int seed, bool data)
{
    char *path = g_strdup_printf("%s/%s", tmp_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    g_autofree char *block = g_malloc(MiB);
    int j;

    g_assert_cmpint(fd, >=, 0);
    if (data) {
        for (j = 0; j < SOURCE_SIZE / MiB; j++) {
            memset(block, 0x30 + (seed * 11 + j) % 150, MiB);
            g_assert_cmpint(write(fd, block, MiB), ==, MiB);
        }
    } else {
        g_assert_cmpint(ftruncate(fd, SOURCE_SIZE), ==, 0);
    }
    close(fd);
    return path;
}

static bool files_equal(const char *a, const char *b)
{
    g_autofree char *da = NULL, *db = NULL;
    gsize la, lb;

    g_assert_true(g_file_get_contents(a, &da, &la, NULL));
    g_assert_true(g_file_get_contents(b, &db, &lb, NULL));
    return la == lb && memcmp(da, db, la) == 0;
}

/*
 * Wait until the job has concluded, dismiss it, and say whether it
 * completed (true) or was cancelled or failed (false).
 */
static bool wait_job_concluded(QTestState *qts, const char *job)
{
    int i;

    for (i = 0; i < 3000; i++) {
        QDict *rsp = qtest_qmp(qts, "{'execute': 'query-jobs'}");
        QList *jobs = qdict_get_qlist(rsp, "return");
        const QListEntry *e;

        QLIST_FOREACH_ENTRY(jobs, e) {
            QDict *j = qobject_to(QDict, qlist_entry_obj(e));

            if (!strcmp(qdict_get_str(j, "id"), job) &&
                !strcmp(qdict_get_str(j, "status"), "concluded")) {
                bool ok = !qdict_haskey(j, "error");

                qobject_unref(rsp);
                qtest_qmp_assert_success(qts, "{'execute': 'job-dismiss',"
                                         " 'arguments': { 'id': %s } }", job);
                return ok;
            }
        }
        qobject_unref(rsp);
        g_usleep(10 * 1000);
    }
    g_error("job %s did not conclude in 30 s", job);
}

static void test_torture(void)
{
    g_autoptr(GString) args = g_string_new("-machine none -nodefaults "
        "-object allocator-policy,id=policy,min-releasable=0");
    Client clients[MONITORS] = { 0 };
    char *src[BACKUPS], *dst[BACKUPS];
    bool completed[BACKUPS] = { false };
    QTestState *qts;
    QDict *rsp, *info, *rel;
    uint64_t ran = 0, shared = 0, returned = 0;
    bool can_release;
    int i;

    for (i = 0; i < MONITORS; i++) {
        clients[i].path = g_strdup_printf("%s/qmp%d.sock", tmp_dir, i);
        g_string_append_printf(args, " -chardev socket,id=qmp%d,path=%s,"
                               "server=on,wait=off -mon chardev=qmp%d,"
                               "mode=control", i, clients[i].path, i);
    }
    qts = qtest_init(args->str);
    rsp = qtest_qmp(qts, "{'execute': 'x-query-allocator-stats'}");
    can_release = qdict_get_bool(qdict_get_qdict(rsp, "return"),
                                 "can-release");
    qobject_unref(rsp);

    for (i = 0; i < MONITORS; i++) {
        clients[i].can_release = can_release;
        qemu_thread_create(&clients[i].thread, "qmp-client", client_run,
                           &clients[i], QEMU_THREAD_JOINABLE);
    }

    /* Meanwhile: backups that complete or get cancelled, policy flips */
    for (i = 0; i < BACKUPS; i++) {
        g_autofree char *s = g_strdup_printf("src%d", i);
        g_autofree char *d = g_strdup_printf("dst%d", i);
        g_autofree char *job = g_strdup_printf("job%d", i);
        g_autofree char *sname = g_strdup_printf("source%d.raw", i);
        g_autofree char *dname = g_strdup_printf("target%d.raw", i);
        bool cancel = i % 3 == 2;

        src[i] = make_file(sname, i, true);
        dst[i] = make_file(dname, i, false);
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add',"
            " 'arguments': { 'driver': 'raw', 'node-name': %s,"
            " 'file': { 'driver': 'file', 'filename': %s } } }", s, src[i]);
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add',"
            " 'arguments': { 'driver': 'raw', 'node-name': %s,"
            " 'file': { 'driver': 'file', 'filename': %s } } }", d, dst[i]);
        qtest_qmp_assert_success(qts, "{'execute': 'qom-set', 'arguments': {"
            " 'path': '/objects/policy', 'property': 'release-after-backup',"
            " 'value': %i } }", i % 4 != 3);
        qtest_qmp_assert_success(qts, "{'execute': 'qom-set', 'arguments': {"
            " 'path': '/objects/policy', 'property': 'min-releasable',"
            " 'value': %d } }", (i % 2) * 1024 * 1024);
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-backup',"
            " 'arguments': { 'job-id': %s, 'device': %s, 'target': %s,"
            " 'sync': 'full', 'auto-dismiss': false,"
            " 'x-perf': { 'max-workers': 256,"
            " 'max-chunk': 65536 } } }", job, s, d);
        if (cancel) {
            /* It may already be over: then there is nothing to cancel */
            qobject_unref(qtest_qmp(qts, "{'execute': 'block-job-cancel',"
                                    " 'arguments': { 'device': %s } }", job));
        }
        completed[i] = wait_job_concluded(qts, job);
        /* Only a cancel may keep a backup from completing */
        g_assert_true(completed[i] || cancel);
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-del',"
                                 " 'arguments': { 'node-name': %s } }", s);
        qtest_qmp_assert_success(qts, "{'execute': 'blockdev-del',"
                                 " 'arguments': { 'node-name': %s } }", d);
    }

    for (i = 0; i < MONITORS; i++) {
        qemu_thread_join(&clients[i].thread);
        if (clients[i].failure) {
            g_error("monitor %d: %s", i, clients[i].failure);
        }
        ran += clients[i].ran;
        shared += clients[i].shared;
        returned += clients[i].returned;
        g_assert_cmpuint(clients[i].queries, ==,
                         can_release ? REQUESTS / 2 : REQUESTS);
    }

    /* Let automatic releases settle, then the books must balance */
    for (i = 0; i < 1000; i++) {
        rsp = qtest_qmp(qts, "{'execute': 'x-query-allocator-stats'}");
        info = qdict_get_qdict(rsp, "return");
        if (!qdict_get_bool(info, "automatic-pending") &&
            !qdict_get_bool(info, "release-running")) {
            break;
        }
        qobject_unref(rsp);
        g_usleep(20 * 1000);
    }
    g_assert_cmpint(i, <, 1000);
    rel = qdict_get_qdict(info, "releases");
    g_test_message("%" PRIu64 " manual releases ran, %" PRIu64 " shared, %"
                   PRIu64 " automatic, %" PRIu64 " skipped", ran, shared,
                   get_u64(rel, "automatic"),
                   get_u64(info, "automatic-skipped"));
    g_assert_cmpuint(get_u64(rel, "manual"), ==, ran);
    /*
     * Automatic requests answered by a release that was already running
     * count as shared too: at least the monitors' ones.
     */
    g_assert_cmpuint(get_u64(rel, "shared"), >=, shared);
    g_assert_cmpuint(ran + shared, ==,
                     can_release ? MONITORS * REQUESTS / 2 : 0);
    /* What was returned is the manual releases' plus the automatic ones' */
    g_assert_cmpuint(get_u64(rel, "returned"), >=, returned);
    qobject_unref(rsp);
    qtest_quit(qts);

    for (i = 0; i < BACKUPS; i++) {
        if (completed[i]) {
            g_assert_true(files_equal(src[i], dst[i]));
        }
        unlink(src[i]);
        unlink(dst[i]);
        g_free(src[i]);
        g_free(dst[i]);
    }
    for (i = 0; i < MONITORS; i++) {
        unlink(clients[i].path);
        g_free(clients[i].path);
    }
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    int ret;

    g_test_init(&argc, &argv, NULL);
    tmp_dir = g_dir_make_tmp("allocator-torture-XXXXXX", &err);
    g_assert_no_error(err);
    qtest_add_func("/allocator/torture", test_torture);
    ret = g_test_run();
    rmdir(tmp_dir);
    g_free(tmp_dir);
    return ret;
}
