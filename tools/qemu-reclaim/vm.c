/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One visit to one VM, and many visits a few at a time (see vm.h).
 */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm.h"

const char *vm_status_name(VmStatus status)
{
    switch (status) {
    case VM_STATUS_OK:
        return "ok";
    case VM_STATUS_UNPATCHED:
        return "unpatched";
    default:
        return "error";
    }
}

static JsonObject *group_of(JsonObject *info, const char *group)
{
    JsonNode *n;

    if (!info) {
        return NULL;
    }
    if (!group) {
        return info;
    }
    n = json_object_get_member(info, group);
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

gboolean vm_info_has(JsonObject *info, const char *group, const char *member)
{
    JsonObject *o = group_of(info, group);

    return o && json_object_has_member(o, member);
}

gboolean vm_info_get_u64(JsonObject *info, const char *group,
                         const char *member, guint64 *value)
{
    JsonObject *o = group_of(info, group);
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    GType type;

    *value = 0;
    if (!n || !JSON_NODE_HOLDS_VALUE(n)) {
        return FALSE;
    }
    type = json_node_get_value_type(n);
    if (type == G_TYPE_DOUBLE) {
        double d = json_node_get_double(n);

        /* Converting a double beyond 2^64 (or NaN) is undefined */
        if (!(d > 0)) {
            *value = 0;
        } else if (d >= 0x1p64) {
            *value = G_MAXUINT64;
        } else {
            *value = (guint64)d;
        }
        return TRUE;
    }
    if (type == G_TYPE_INT64) {
        gint64 v = json_node_get_int(n);

        *value = v > 0 ? (guint64)v : 0;
        return TRUE;
    }
    return FALSE;       /* a string or a boolean is no figure */
}

guint64 vm_info_u64(JsonObject *info, const char *group, const char *member)
{
    guint64 v;

    vm_info_get_u64(info, group, member, &v);
    return v;
}

const char *vm_info_str(JsonObject *info, const char *group,
                        const char *member)
{
    JsonObject *o = group_of(info, group);
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;

    if (!n || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        return NULL;
    }
    return json_node_get_string(n);
}

const char *vm_info_backend(JsonObject *info)
{
    return vm_info_str(info, NULL, "backend");
}

gboolean vm_info_can_release(JsonObject *info)
{
    const char *backend = vm_info_backend(info);

    /* The allocator "system" offers neither statistics nor a release */
    return backend && !g_str_equal(backend, "system");
}

gboolean vm_info_held(JsonObject *info, guint64 *held)
{
    guint64 allocated, free;

    if (!vm_info_get_u64(info, "stats", "allocated", &allocated) ||
        !vm_info_get_u64(info, "stats", "free", &free)) {
        *held = 0;
        return FALSE;
    }
    /* Saturated: a peer's figures may be anything */
    *held = allocated + free >= allocated ? allocated + free : G_MAXUINT64;
    return TRUE;
}

guint64 vm_info_releases(JsonObject *info)
{
    return vm_info_u64(info, NULL, "manual-releases") +
        vm_info_u64(info, NULL, "automatic-releases");
}

gboolean vm_read_rss(GPid pid, guint64 *rss)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    const char *line;

    if (pid <= 0 || !g_file_get_contents(path, &text, NULL, NULL)) {
        return FALSE;
    }
    line = strstr(text, "\nVmRSS:");
    if (!line) {
        return FALSE;       /* a zombie, or a kernel thread */
    }
    *rss = g_ascii_strtoull(line + 7, NULL, 10) << 10;
    return TRUE;
}

void vm_visit_free(VmVisit *visit)
{
    if (!visit) {
        return;
    }
    if (visit->client) {
        qmp_client_close(visit->client);
        g_object_unref(visit->client);
    }
    g_clear_pointer(&visit->info, json_object_unref);
    g_free(visit->name);
    g_free(visit->address);
    g_free(visit->error);
    g_free(visit);
}

void vm_visit_fail(VmVisit *visit, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_free(visit->error);
    visit->error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    visit->status = VM_STATUS_ERROR;
    if (visit->client) {
        qmp_client_close(visit->client);
        g_clear_object(&visit->client);
    }
}

static void visit_finish(VmVisit *visit)
{
    visit->done(visit, visit->done_data);
}

/* What is left of the visit's time budget, at least 1 ms. */
static guint remaining_ms(VmVisit *visit)
{
    gint64 left = visit->timeout_ms -
        (g_get_monotonic_time() - visit->started_us) / 1000;

    return left > 1 ? (guint)left : 1;
}

/* What a patched QEMU must answer; NULL if it did, else why not. */
static const char *check_info(JsonObject *info)
{
    JsonNode *stats = json_object_get_member(info, "stats");

    if (!vm_info_backend(info)) {
        return "x-query-allocator-stats answered without a backend";
    }
    /* Statistics are optional (the "system" allocator has none), but
     * statistics without the two figures every allocator has are broken */
    if (stats && (!JSON_NODE_HOLDS_OBJECT(stats) ||
                  !vm_info_has(info, "stats", "allocated") ||
                  !vm_info_has(info, "stats", "free"))) {
        return "x-query-allocator-stats answered with incomplete statistics";
    }
    return NULL;
}

static void on_queried(GObject *source, GAsyncResult *res, gpointer data)
{
    VmVisit *visit = data;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute_finish(QMP_CLIENT(source),
                                                        res, &err);
    const char *bad;

    visit->pid = qmp_client_get_peer_pid(visit->client);
    if (!ret) {
        if (g_error_matches(err, QMP_CLIENT_ERROR,
                            QMP_CLIENT_ERROR_COMMAND_NOT_FOUND)) {
            const char *v = qmp_client_get_qemu_version(visit->client);

            visit->status = VM_STATUS_UNPATCHED;
            visit->error = g_strdup_printf(
                "QEMU %s has no x-query-allocator-stats", v ? v : "?");
            visit->has_rss = vm_read_rss(visit->pid, &visit->rss);
        } else {
            vm_visit_fail(visit, "%s", err->message);
        }
        visit_finish(visit);
        return;
    }
    bad = JSON_NODE_HOLDS_OBJECT(ret) ? check_info(json_node_get_object(ret))
        : "x-query-allocator-stats answered without an object";
    if (bad) {
        vm_visit_fail(visit, "%s", bad);
        visit_finish(visit);
        return;
    }
    visit->info = json_object_ref(json_node_get_object(ret));
    /* QEMU does not tell its RSS: /proc does, for a peer on this host */
    visit->has_rss = vm_read_rss(visit->pid, &visit->rss);
    visit->status = VM_STATUS_OK;
    visit_finish(visit);
}

static void on_connected(GObject *source, GAsyncResult *res, gpointer data)
{
    VmVisit *visit = data;
    g_autoptr(GError) err = NULL;

    if (!qmp_client_connect_finish(QMP_CLIENT(source), res, &err)) {
        vm_visit_fail(visit, "%s", err->message);
        visit_finish(visit);
        return;
    }
    qmp_client_execute_async(visit->client, "x-query-allocator-stats", NULL,
                             remaining_ms(visit), NULL, on_queried, visit);
}

/*
 * Why a Unix socket is not talked to, or NULL.  The tool often runs as
 * root: a socket that another user made (or a link that another user can
 * point anywhere) could feed it figures, or collect its releases, in a
 * VM's name.  QEMU's sockets belong to the user QEMU runs as: root, or
 * the tool's own user.
 */
static char *refused(const char *address)
{
    struct stat st;

    if (g_str_has_prefix(address, "tcp:")) {
        return NULL;
    }
    if (g_str_has_prefix(address, "unix:")) {
        address += 5;
    }
    if (lstat(address, &st) < 0) {
        return NULL;    /* connecting says what is wrong */
    }
    if (S_ISLNK(st.st_mode)) {
        return g_strdup("refused: a symbolic link, not QEMU's socket");
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        return g_strdup_printf("refused: the socket belongs to uid %u, "
                               "neither to root nor to this user (uid %u)",
                               (unsigned)st.st_uid, (unsigned)geteuid());
    }
    return NULL;
}

static gboolean finish_refused(gpointer data)
{
    visit_finish(data);
    return G_SOURCE_REMOVE;
}

void vm_visit_start(const VmTarget *target, guint timeout_ms,
                     VmVisitFunc done, gpointer user_data)
{
    VmVisit *visit = g_new0(VmVisit, 1);

    visit->name = g_strdup(target->name);
    visit->address = g_strdup(target->address);
    visit->timeout_ms = timeout_ms;
    visit->done = done;
    visit->done_data = user_data;
    visit->started_us = g_get_monotonic_time();
    visit->status = VM_STATUS_ERROR;
    visit->error = refused(target->address);
    if (visit->error) {
        /* Called back from the main loop, as after a failed connect */
        g_idle_add(finish_refused, visit);
        return;
    }
    visit->client = qmp_client_new(target->address);
    qmp_client_connect_async(visit->client, timeout_ms, NULL, on_connected,
                             visit);
}

/* ---- a few at a time ------------------------------------------------- */

struct Runner {
    guint n_jobs;
    guint max_parallel;
    guint next;
    guint running;
    guint finished;
    gboolean started;
    gboolean done_scheduled;
    RunnerJobFunc job;
    RunnerDoneFunc done;
    gpointer user_data;
};

Runner *runner_new(guint n_jobs, guint max_parallel, RunnerJobFunc job,
                   RunnerDoneFunc done, gpointer user_data)
{
    Runner *r = g_new0(Runner, 1);

    r->n_jobs = n_jobs;
    r->max_parallel = MAX(max_parallel, 1);
    r->job = job;
    r->done = done;
    r->user_data = user_data;
    return r;
}

void runner_free(Runner *runner)
{
    g_free(runner);
}

static gboolean on_all_done(gpointer data)
{
    Runner *r = data;

    r->done(r, r->user_data);
    return G_SOURCE_REMOVE;
}

static void fill(Runner *r)
{
    while (r->running < r->max_parallel && r->next < r->n_jobs) {
        r->running++;
        r->job(r, r->next++, r->user_data);
    }
    if (r->finished == r->n_jobs && !r->done_scheduled) {
        r->done_scheduled = TRUE;
        /* From the main loop, never from inside a job's callback */
        g_idle_add(on_all_done, r);
    }
}

void runner_start(Runner *runner)
{
    g_return_if_fail(!runner->started);
    runner->started = TRUE;
    fill(runner);
}

void runner_job_done(Runner *runner)
{
    g_assert(runner->running > 0);
    runner->running--;
    runner->finished++;
    fill(runner);
}

guint runner_n_jobs(Runner *runner)
{
    return runner->n_jobs;
}

guint runner_n_finished(Runner *runner)
{
    return runner->finished;
}

guint runner_n_running(Runner *runner)
{
    return runner->running;
}

/* ---- one visit to every VM ------------------------------------------- */

typedef struct {
    GPtrArray *targets;
    GPtrArray *visits;
    guint timeout_ms;
    Runner *runner;
    VmPassFunc done;
    gpointer user_data;
} Pass;

typedef struct {
    Pass *pass;
    guint index;
} PassSlot;

static void pass_on_visit(VmVisit *visit, gpointer data)
{
    PassSlot *slot = data;
    Pass *pass = slot->pass;

    /* The figures are kept; the socket goes back to its other users now */
    if (visit->client) {
        qmp_client_close(visit->client);
        g_clear_object(&visit->client);
    }
    pass->visits->pdata[slot->index] = visit;
    g_free(slot);
    runner_job_done(pass->runner);
}

static void pass_job(Runner *runner, guint index, gpointer data)
{
    Pass *pass = data;
    PassSlot *slot = g_new0(PassSlot, 1);

    slot->pass = pass;
    slot->index = index;
    vm_visit_start(pass->targets->pdata[index], pass->timeout_ms,
                   pass_on_visit, slot);
}

static void pass_done(Runner *runner, gpointer data)
{
    Pass *pass = data;

    pass->done(pass->visits, pass->user_data);
    g_ptr_array_unref(pass->targets);
    runner_free(pass->runner);
    g_free(pass);
}

void vm_pass_start(GPtrArray *targets, guint timeout_ms, guint max_parallel,
                   VmPassFunc done, gpointer user_data)
{
    Pass *pass = g_new0(Pass, 1);

    pass->targets = g_ptr_array_ref(targets);
    pass->visits = g_ptr_array_new_full(targets->len,
                                        (GDestroyNotify)vm_visit_free);
    g_ptr_array_set_size(pass->visits, targets->len);
    pass->timeout_ms = timeout_ms;
    pass->done = done;
    pass->user_data = user_data;
    pass->runner = runner_new(targets->len, max_parallel, pass_job,
                              pass_done, pass);
    runner_start(pass->runner);
}
