/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim auto: a daemon that gives memory back on VMs whose
 * releasable memory stays high, gently: one release at a time, at most
 * once per VM per --min-interval, at most --rate per minute host-wide.
 */
#include <glib-unix.h>

#include "cli.h"
#include "units.h"

static char *opt_threshold;
static char *opt_hold;
static char *opt_min_interval;
static char *opt_rate;
static char *opt_interval;

static guint64 threshold = 256 * 1024 * 1024;
static gint64 hold_us = 60 * G_USEC_PER_SEC;
static gint64 min_interval_us = 600 * G_USEC_PER_SEC;
static guint rate_per_min = 6;
static guint interval_s = 10;

static const GOptionEntry entries[] = {
    { "threshold", 'T', 0, G_OPTION_ARG_STRING, &opt_threshold,
      "Release on VMs with at least SIZE releasable (default 256M)",
      "SIZE" },
    { "hold", 0, 0, G_OPTION_ARG_STRING, &opt_hold,
      "... for at least SEC seconds in a row (default 60)", "SEC" },
    { "min-interval", 0, 0, G_OPTION_ARG_STRING, &opt_min_interval,
      "At most one release per VM every SEC seconds (default 600)", "SEC" },
    { "rate", 0, 0, G_OPTION_ARG_STRING, &opt_rate,
      "At most N releases per minute on the host (default 6)", "N" },
    { "interval", 'i', 0, G_OPTION_ARG_STRING, &opt_interval,
      "Look at the VMs every SEC seconds (default 10)", "SEC" },
    G_OPTION_ENTRY_NULL
};

static gboolean parse_seconds(const char *text, const char *what,
                              guint64 min, gint64 *us, GError **error)
{
    guint64 v;

    if (!units_parse_uint(text, min, 7 * 86400, what, &v, error)) {
        return FALSE;
    }
    *us = v * G_USEC_PER_SEC;
    return TRUE;
}

static gboolean check(CliCommon *common, GError **error)
{
    guint64 v;
    gint64 us;

    if (opt_threshold) {
        if (!units_parse_size(opt_threshold, &threshold, error)) {
            g_prefix_error(error, "--threshold: ");
            return FALSE;
        }
        if (!threshold) {
            g_set_error_literal(error, G_OPTION_ERROR,
                                G_OPTION_ERROR_BAD_VALUE,
                                "--threshold: must be above 0");
            return FALSE;
        }
    }
    if (opt_hold && !parse_seconds(opt_hold, "--hold", 0, &hold_us, error)) {
        return FALSE;
    }
    if (opt_min_interval &&
        !parse_seconds(opt_min_interval, "--min-interval", 0,
                       &min_interval_us, error)) {
        return FALSE;
    }
    if (opt_rate) {
        if (!units_parse_uint(opt_rate, 1, 6000, "--rate", &v, error)) {
            return FALSE;
        }
        rate_per_min = v;
    }
    if (opt_interval) {
        if (!parse_seconds(opt_interval, "--interval", 1, &us, error)) {
            return FALSE;
        }
        interval_s = us / G_USEC_PER_SEC;
    }
    return TRUE;
}

/*
 * What the daemon remembers of one QEMU process between looks.  It is
 * keyed by the VM's name and the process behind its socket: a VM whose
 * QEMU was restarted is a new process with a fresh heap, and inherits
 * neither the old one's --hold timer nor its --min-interval.
 */
typedef struct {
    char *name;
    gint64 above_since;     /* 0: below the threshold at the last look */
    gint64 last_release;    /* 0: never */
    gboolean seen;          /* in the last pass: VMs that left are dropped */
    gboolean told_left;     /* logged why the VM is left alone */
    gboolean queued;        /* waiting in Daemon.queue */
} VmMemory;

/* A VM waiting for its release. */
typedef struct {
    char *key;
    VmTarget *target;
} Due;

typedef struct {
    CliCommon *common;
    GMainLoop *loop;
    GHashTable *vms;        /* key -> VmMemory */
    GQueue recent;          /* monotonic times of releases, last minute */
    GQueue queue;           /* Due, in order */
    char *releasing;        /* the key of the VM being released, or NULL */
    gboolean pass_running;
    gboolean stopping;
    guint timer;
} Daemon;

static void vm_memory_free(VmMemory *m)
{
    g_free(m->name);
    g_free(m);
}

/*
 * A VM that could not be asked this time (its socket busy with a release,
 * its QEMU restarting) keeps what is known of its processes, but its
 * --hold starts again.
 */
static void keep_vm(Daemon *d, const char *name)
{
    GHashTableIter iter;
    VmMemory *m;

    g_hash_table_iter_init(&iter, d->vms);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&m)) {
        if (g_str_equal(m->name, name)) {
            m->seen = TRUE;
            m->above_since = 0;
        }
    }
}

static void due_free(Due *due)
{
    g_free(due->key);
    vm_target_free(due->target);
    g_free(due);
}

/*
 * "NAME pid PID since TICKS": the start time tells a process from a later
 * one that got the same pid.  Without a peer (TCP) only the name is known.
 */
static char *key_of(VmVisit *v)
{
    g_autofree char *path = NULL;
    g_autofree char *stat = NULL;
    const char *p;
    int field;

    if (v->pid <= 0) {
        return g_strdup(v->name);
    }
    path = g_strdup_printf("/proc/%d/stat", (int)v->pid);
    if (!g_file_get_contents(path, &stat, NULL, NULL) ||
        !(p = strrchr(stat, ')'))) {
        return g_strdup_printf("%s pid %d", v->name, (int)v->pid);
    }
    /* After "pid (comm)", starttime is the 20th field */
    for (field = 2; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    return g_strdup_printf("%s pid %d since %" G_GUINT64_FORMAT, v->name,
                           (int)v->pid, p ? g_ascii_strtoull(p, NULL, 10) :
                           0);
}

static void release_next(Daemon *d);

static void maybe_quit(Daemon *d)
{
    if (d->stopping && !d->pass_running && !d->releasing) {
        g_main_loop_quit(d->loop);
    }
}

static VmTarget *target_of(VmVisit *v)
{
    VmTarget *t = g_new0(VmTarget, 1);

    t->name = g_strdup(v->name);
    t->address = g_strdup(v->address);
    return t;
}

static void on_released(GObject *source, GAsyncResult *res, gpointer data)
{
    VmVisit *visit = data;
    Daemon *d = visit->done_data;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute_finish(QMP_CLIENT(source),
                                                        res, &err);
    VmMemory *m = g_hash_table_lookup(d->vms, d->releasing);

    if (m) {
        /* Failed or not, wait the full interval before the next try */
        m->last_release = g_get_monotonic_time();
        m->above_since = 0;
    }
    if (!ret || !JSON_NODE_HOLDS_OBJECT(ret)) {
        g_warning("%s: release failed: %s", visit->name,
                  err ? err->message : "no figures in the answer");
    } else {
        /* The answer is the AllocatorRelease; glibc does not count */
        JsonObject *o = json_node_get_object(ret);
        guint64 returned, before, after;
        g_autofree char *amount = vm_info_get_u64(o, NULL, "returned",
                                                  &returned) ?
            units_format_size(returned) : g_strdup("(not counted)");
        g_autofree char *took =
            units_format_duration_us(vm_info_u64(o, NULL, "duration-us"));
        g_autofree char *rss = NULL;

        if (vm_info_get_u64(o, NULL, "process-rss-before", &before) &&
            vm_info_get_u64(o, NULL, "process-rss-after", &after)) {
            g_autofree char *b = units_format_size(before);
            g_autofree char *a = units_format_size(after);

            rss = g_strdup_printf(" (RSS %s -> %s)", b, a);
        }
        cli_log("%s: released %s in %s%s", visit->name, amount, took,
                rss ? rss : "");
    }
    vm_visit_free(visit);
    g_clear_pointer(&d->releasing, g_free);
    release_next(d);
}

static void on_release_visit(VmVisit *visit, gpointer data)
{
    Daemon *d = data;

    if (visit->status != VM_STATUS_OK) {
        g_warning("%s: cannot release: %s", visit->name,
                  visit->error ? visit->error : "unpatched");
        vm_visit_free(visit);
        g_clear_pointer(&d->releasing, g_free);
        release_next(d);
        return;
    }
    /* Releases take as long as they take: no time limit but a generous one */
    qmp_client_execute_async(visit->client, "x-release-free-memory", NULL,
                             MAX(d->common->timeout_ms, 120000), NULL,
                             on_released, visit);
}

/* Whether the host-wide rate allows a release now. */
static gboolean rate_allows(Daemon *d)
{
    gint64 now = g_get_monotonic_time();

    while (!g_queue_is_empty(&d->recent) &&
           now - *(gint64 *)g_queue_peek_head(&d->recent) >=
           60 * G_USEC_PER_SEC) {
        g_free(g_queue_pop_head(&d->recent));
    }
    return g_queue_get_length(&d->recent) < rate_per_min;
}

/* Whether the VM may be released now: it is still there and its
 * --min-interval has passed (the queue may have waited on slow releases). */
static gboolean still_due(Daemon *d, const char *key)
{
    VmMemory *m = g_hash_table_lookup(d->vms, key);

    if (m) {
        m->queued = FALSE;
    }
    return m && !(m->last_release &&
                  g_get_monotonic_time() - m->last_release < min_interval_us);
}

static void release_next(Daemon *d)
{
    Due *due;
    gint64 *stamp;

    if (d->releasing || d->stopping) {
        maybe_quit(d);
        return;
    }
    while ((due = g_queue_peek_head(&d->queue)) &&
           !still_due(d, due->key)) {
        due_free(g_queue_pop_head(&d->queue));
    }
    if (!due) {
        return;
    }
    if (!rate_allows(d)) {
        guint n = g_queue_get_length(&d->queue);

        /* The rest waits for the next look; nothing is lost */
        cli_log("host-wide limit reached (--rate %u per minute); %u VM%s "
                "wait%s", rate_per_min, n, n == 1 ? "" : "s",
                n == 1 ? "s" : "");
        while ((due = g_queue_pop_head(&d->queue))) {
            still_due(d, due->key);
            due_free(due);
        }
        return;
    }
    due = g_queue_pop_head(&d->queue);
    stamp = g_new(gint64, 1);
    *stamp = g_get_monotonic_time();
    g_queue_push_tail(&d->recent, stamp);
    d->releasing = g_steal_pointer(&due->key);
    vm_visit_start(due->target, d->common->timeout_ms, on_release_visit, d);
    due_free(due);
}

static void on_pass(GPtrArray *visits, gpointer data)
{
    Daemon *d = data;
    gint64 now = g_get_monotonic_time();
    GHashTableIter iter;
    gpointer k;
    VmMemory *m;
    guint i;

    d->pass_running = FALSE;
    g_hash_table_iter_init(&iter, d->vms);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&m)) {
        m->seen = FALSE;
    }
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];
        g_autofree char *key = NULL;
        guint64 releasable = 0;
        const char *left = NULL;

        if (v->status == VM_STATUS_ERROR) {
            g_debug("%s: %s", v->name, v->error);
            keep_vm(d, v->name);
            continue;
        }
        key = key_of(v);
        m = g_hash_table_lookup(d->vms, key);
        if (!m) {
            m = g_new0(VmMemory, 1);
            m->name = g_strdup(v->name);
            g_hash_table_insert(d->vms, g_strdup(key), m);
        }
        m->seen = TRUE;
        if (v->status == VM_STATUS_OK && !vm_info_can_release(v->info)) {
            left = "cannot release memory";
        } else if (v->status == VM_STATUS_OK &&
                   !vm_info_get_u64(v->info, "stats", "releasable",
                                    &releasable)) {
            /* glibc: QEMU trims its heap by itself when idle */
            left = "does not tell what is releasable";
        }
        if (left && !m->told_left) {
            cli_log("%s: left alone: its allocator (%s) %s", v->name,
                    vm_info_backend(v->info), left);
            m->told_left = TRUE;
        }
        if (v->status != VM_STATUS_OK || left || releasable < threshold) {
            m->above_since = 0;
            continue;
        }
        if (!m->above_since) {
            m->above_since = now;
        }
        if (now - m->above_since < hold_us ||
            (m->last_release && now - m->last_release < min_interval_us)) {
            continue;
        }
        /* Once in the queue, and not again while its release runs */
        if (!m->queued && g_strcmp0(d->releasing, key)) {
            g_autofree char *size = units_format_size(releasable);
            Due *due = g_new0(Due, 1);

            cli_log("%s: %s releasable, releasing", v->name, size);
            due->key = g_steal_pointer(&key);
            due->target = target_of(v);
            g_queue_push_tail(&d->queue, due);
            m->queued = TRUE;
        }
    }
    /* Processes that are gone are forgotten; a queued one is dropped
     * when its turn comes */
    g_hash_table_iter_init(&iter, d->vms);
    while (g_hash_table_iter_next(&iter, &k, (gpointer *)&m)) {
        if (!m->seen && g_strcmp0(d->releasing, k)) {
            g_hash_table_iter_remove(&iter);
        }
    }
    g_ptr_array_unref(visits);
    release_next(d);
    maybe_quit(d);
}

static gboolean on_timer(gpointer data)
{
    Daemon *d = data;
    g_autoptr(GPtrArray) targets = NULL;

    if (d->pass_running || d->stopping) {
        return G_SOURCE_CONTINUE;
    }
    targets = cli_pass_targets(d->common);
    d->pass_running = TRUE;
    vm_pass_start(targets, d->common->timeout_ms, d->common->jobs ?: 32,
                  on_pass, d);
    return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer data)
{
    Daemon *d = data;

    cli_log("stopping%s", d->releasing ?
            " after the release that is running" : "");
    d->stopping = TRUE;
    maybe_quit(d);
    return G_SOURCE_CONTINUE;
}

static int run(CliCommon *common)
{
    Daemon d = { .common = common };
    g_autofree char *size = units_format_size(threshold);

    d.loop = g_main_loop_new(NULL, FALSE);
    d.vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                  (GDestroyNotify)vm_memory_free);
    g_queue_init(&d.recent);
    g_queue_init(&d.queue);
    cli_log("releasing on VMs with %s releasable for %" G_GINT64_FORMAT
            " s, at most every %" G_GINT64_FORMAT " s per VM and %u per "
            "minute; looking every %u s", size, hold_us / G_USEC_PER_SEC,
            min_interval_us / G_USEC_PER_SEC, rate_per_min, interval_s);
    on_timer(&d);
    d.timer = g_timeout_add_seconds(interval_s, on_timer, &d);
    g_unix_signal_add(SIGTERM, on_signal, &d);
    g_unix_signal_add(SIGINT, on_signal, &d);
    g_main_loop_run(d.loop);

    g_source_remove(d.timer);
    g_queue_clear_full(&d.recent, g_free);
    g_queue_clear_full(&d.queue, (GDestroyNotify)due_free);
    g_hash_table_destroy(d.vms);
    g_free(d.releasing);
    g_main_loop_unref(d.loop);
    cli_log("stopped");
    return EXIT_OK;
}

const CliCommand cli_auto = {
    .name = "auto",
    .parameter = "[TARGET...]",
    .summary = "daemon: release on VMs whose free memory stays high",
    .description =
        "Looks at every VM each --interval seconds and releases free memory\n"
        "on a VM whose releasable memory stayed at or above --threshold for\n"
        "--hold seconds, one VM at a time, at most once per VM every\n"
        "--min-interval seconds and --rate times per minute on the host.\n"
        "VMs whose allocator does not tell what is releasable (glibc) are\n"
        "left alone.\n"
        "Logs every release on stderr (the journal under systemd).\n"
        "SIGTERM or SIGINT: finish the running release, then exit.",
    .entries = entries,
    .check = check,
    .run = run,
};
