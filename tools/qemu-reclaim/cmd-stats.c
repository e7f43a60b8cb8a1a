/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim stats: what every VM's allocator holds, in a table or JSON.
 */
#include <stdlib.h>

#include "cli.h"
#include "units.h"

static gboolean opt_json;
static gboolean opt_bytes;
static char *opt_sort = NULL;

static const char *const sort_keys[] = {
    "releasable", "rss", "held", "allocated", "name", NULL
};

static const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json,
      "Print JSON for scripts", NULL },
    { "bytes", 0, 0, G_OPTION_ARG_NONE, &opt_bytes,
      "Print sizes in bytes", NULL },
    { "sort", 's', 0, G_OPTION_ARG_STRING, &opt_sort,
      "Sort by releasable (default), rss, held, allocated or name", "KEY" },
    G_OPTION_ENTRY_NULL
};

static gboolean check(CliCommon *common, GError **error)
{
    if (opt_sort && !g_strv_contains(sort_keys, opt_sort)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--sort: '%s' is not one of releasable, rss, held, "
                    "allocated, name", opt_sort);
        return FALSE;
    }
    return TRUE;
}

/* The figure a VM is sorted by; FALSE if the VM has none. */
static gboolean sort_value(VmVisit *v, const char *key, guint64 *value)
{
    if (g_str_equal(key, "rss")) {
        *value = v->rss;
        return v->has_rss;
    }
    if (g_str_equal(key, "held")) {
        return vm_info_held(v->info, value);
    }
    return vm_info_get_u64(v->info, "stats", key, value);
}

static int compare_visits(gconstpointer a, gconstpointer b,
                          gpointer user_data)
{
    VmVisit *va = *(VmVisit **)a, *vb = *(VmVisit **)b;
    const char *key = user_data;

    if (!g_str_equal(key, "name")) {
        guint64 x, y;
        gboolean has_x = sort_value(va, key, &x);
        gboolean has_y = sort_value(vb, key, &y);

        /* Largest first; VMs without the figure after all that have it */
        if (has_x != has_y) {
            return has_x ? -1 : 1;
        }
        if (x != y) {
            return x > y ? -1 : 1;
        }
    }
    /* VMs that answered first, then unpatched ones, then failures */
    if (va->status != vb->status) {
        return va->status < vb->status ? -1 : 1;
    }
    return targets_compare_names(va->name, vb->name);
}

/* A size cell: NULL ("-") when QEMU did not tell */
static char *size_cell(JsonObject *info, const char *member)
{
    guint64 v;

    return vm_info_get_u64(info, "stats", member, &v) ?
        cli_size(v, opt_bytes) : NULL;
}

static void print_table(GPtrArray *visits)
{
    g_autoptr(CliTable) t = cli_table_new("llrrrrrl", "VM", "BACKEND",
                                          "ALLOCATED", "HELD", "RELEASABLE",
                                          "RSS", "RELEASES", "STATUS", NULL);
    guint64 releasable = 0, rss = 0, v;
    gboolean any_releasable = FALSE, any_rss = FALSE;
    guint i, n_ok = 0, n_unpatched = 0, n_failed = 0;

    for (i = 0; i < visits->len; i++) {
        VmVisit *vv = visits->pdata[i];
        JsonObject *info = vv->info;
        char *status;

        switch (vv->status) {
        case VM_STATUS_OK:
            status = g_strdup("ok");
            n_ok++;
            break;
        case VM_STATUS_UNPATCHED:
            status = g_strdup_printf("unpatched: %s", vv->error);
            n_unpatched++;
            break;
        default:
            status = g_strdup_printf("error: %s", vv->error);
            n_failed++;
        }
        if (vm_info_get_u64(info, "stats", "releasable", &v)) {
            releasable += v;
            any_releasable = TRUE;
        }
        if (vv->has_rss) {
            rss += vv->rss;
            any_rss = TRUE;
        }
        cli_table_add(t, g_strdup(vv->name),
                      g_strdup(vm_info_backend(info)),
                      size_cell(info, "allocated"),
                      vm_info_held(info, &v) ? cli_size(v, opt_bytes) : NULL,
                      size_cell(info, "releasable"),
                      vv->has_rss ? cli_size(vv->rss, opt_bytes) : NULL,
                      info ? g_strdup_printf("%" G_GUINT64_FORMAT,
                                             vm_info_releases(info)) : NULL,
                      status);
    }
    /* The totals of what is known; "-" if no VM told it */
    cli_table_add(t, g_strdup("total"), g_strdup(""), g_strdup(""),
                  g_strdup(""),
                  any_releasable ? cli_size(releasable, opt_bytes) : NULL,
                  any_rss ? cli_size(rss, opt_bytes) : NULL, g_strdup(""),
                  g_strdup_printf("%u VMs: %u ok, %u unpatched, %u failed",
                                  visits->len, n_ok, n_unpatched, n_failed));
    cli_table_print(t, stdout);
}

/* A member for each figure QEMU told; what it did not tell is left out */
static void json_figure(JsonBuilder *b, const char *name, JsonObject *info,
                        const char *group, const char *member)
{
    guint64 v;

    if (vm_info_get_u64(info, group, member, &v)) {
        cli_json_u64(b, name, v);
    }
}

static void json_last_release(JsonBuilder *b, JsonObject *info)
{
    const char *trigger = vm_info_str(info, "last-release", "trigger");

    if (!vm_info_has(info, NULL, "last-release")) {
        return;
    }
    json_builder_set_member_name(b, "last-release");
    json_builder_begin_object(b);
    if (trigger) {
        cli_json_str(b, "trigger", trigger);
    }
    json_figure(b, "returned", info, "last-release", "returned");
    json_figure(b, "rss-before", info, "last-release", "process-rss-before");
    json_figure(b, "rss-after", info, "last-release", "process-rss-after");
    json_figure(b, "duration-us", info, "last-release", "duration-us");
    json_builder_end_object(b);
}

static void print_json(GPtrArray *visits)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    guint64 releasable = 0, rss = 0, held, v;
    gboolean any_releasable = FALSE, any_rss = FALSE;
    guint i, n[3] = { 0 };

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vms");
    json_builder_begin_array(b);
    for (i = 0; i < visits->len; i++) {
        VmVisit *vv = visits->pdata[i];

        n[vv->status]++;
        json_builder_begin_object(b);
        cli_json_str(b, "vm", vv->name);
        cli_json_str(b, "address", vv->address);
        cli_json_str(b, "status", vm_status_name(vv->status));
        if (vv->error) {
            cli_json_str(b, "error", vv->error);
        }
        if (vv->pid) {
            cli_json_u64(b, "pid", vv->pid);
        }
        if (vv->info) {
            cli_json_str(b, "backend", vm_info_backend(vv->info));
            json_figure(b, "allocated", vv->info, "stats", "allocated");
            if (vm_info_held(vv->info, &held)) {
                cli_json_u64(b, "held", held);
            }
            json_figure(b, "free", vv->info, "stats", "free");
            json_figure(b, "releasable", vv->info, "stats", "releasable");
            json_figure(b, "returned", vv->info, "stats", "returned");
            if (vm_info_get_u64(vv->info, "stats", "releasable", &v)) {
                releasable += v;
                any_releasable = TRUE;
            }
        }
        if (vv->has_rss) {
            cli_json_u64(b, "rss", vv->rss);
            rss += vv->rss;
            any_rss = TRUE;
        }
        if (vv->info) {
            json_builder_set_member_name(b, "releases");
            json_builder_begin_object(b);
            cli_json_u64(b, "manual", vm_info_u64(vv->info, NULL,
                                                  "manual-releases"));
            cli_json_u64(b, "automatic", vm_info_u64(vv->info, NULL,
                                                     "automatic-releases"));
            json_builder_end_object(b);
            json_last_release(b, vv->info);
        }
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "total");
    json_builder_begin_object(b);
    cli_json_u64(b, "vms", visits->len);
    cli_json_u64(b, "ok", n[VM_STATUS_OK]);
    cli_json_u64(b, "unpatched", n[VM_STATUS_UNPATCHED]);
    cli_json_u64(b, "failed", n[VM_STATUS_ERROR]);
    /* The totals of what is known; left out if no VM told it */
    if (any_releasable) {
        cli_json_u64(b, "releasable", releasable);
    }
    if (any_rss) {
        cli_json_u64(b, "rss", rss);
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
    cli_print_json(b);
}

typedef struct {
    GMainLoop *loop;
    GPtrArray *visits;
} StatsRun;

static void on_pass(GPtrArray *visits, gpointer data)
{
    StatsRun *run = data;

    run->visits = visits;
    g_main_loop_quit(run->loop);
}

static int run(CliCommon *common)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) targets = cli_targets(common, &err);
    StatsRun r = { 0 };
    guint i;
    int rc = EXIT_OK;

    if (!targets) {
        g_printerr("qemu-reclaim: %s\n", err->message);
        return EXIT_USAGE;
    }
    r.loop = g_main_loop_new(NULL, FALSE);
    vm_pass_start(targets, common->timeout_ms, common->jobs ?: 32,
                  on_pass, &r);
    g_main_loop_run(r.loop);
    g_main_loop_unref(r.loop);

    g_ptr_array_sort_with_data(r.visits, compare_visits,
                               opt_sort ? opt_sort : "releasable");
    if (opt_json) {
        print_json(r.visits);
    } else {
        print_table(r.visits);
    }
    for (i = 0; i < r.visits->len; i++) {
        VmVisit *v = r.visits->pdata[i];

        if (v->status == VM_STATUS_ERROR) {
            rc = EXIT_VM_FAILED;
        }
    }
    g_ptr_array_unref(r.visits);
    return rc;
}

const CliCommand cli_stats = {
    .name = "stats",
    .parameter = "[TARGET...]",
    .summary = "show what each VM's memory allocator holds",
    .description =
        "Asks every VM for its allocator statistics (x-query-allocator-stats)\n"
        "and prints a table sorted by releasable memory: memory QEMU has\n"
        "freed that the allocator keeps and a release can give back.  A\n"
        "figure QEMU does not tell (glibc: releasable) is shown as '-'.\n"
        "RSS is read from /proc for the process at the other end of the\n"
        "socket.  A QEMU without the command is listed as unpatched.\n"
        "Exit status 1 if a VM could not be asked.",
    .entries = entries,
    .check = check,
    .run = run,
};
