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
    { NULL }
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

/* The figure a VM is sorted by; VMs without it sort last. */
static guint64 sort_value(VmVisit *v, const char *key)
{
    if (g_str_equal(key, "rss")) {
        return v->has_rss ? v->rss : 0;
    }
    return vm_info_u64(v->info, "stats", key);
}

static int compare_visits(gconstpointer a, gconstpointer b,
                          gpointer user_data)
{
    VmVisit *va = *(VmVisit **)a, *vb = *(VmVisit **)b;
    const char *key = user_data;

    if (!g_str_equal(key, "name")) {
        guint64 x = sort_value(va, key), y = sort_value(vb, key);

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

static guint64 release_count(JsonObject *info)
{
    return vm_info_u64(info, "releases", "manual") +
        vm_info_u64(info, "releases", "automatic");
}

static void print_table(GPtrArray *visits)
{
    g_autoptr(CliTable) t = cli_table_new("llrrrrrl", "VM", "BACKEND",
                                          "ALLOCATED", "HELD", "RELEASABLE",
                                          "RSS", "RELEASES", "STATUS", NULL);
    guint64 releasable = 0, rss = 0;
    guint i, n_ok = 0, n_unpatched = 0, n_failed = 0;

    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];
        JsonObject *info = v->info;
        char *status;

        switch (v->status) {
        case VM_STATUS_OK:
            status = g_strdup("ok");
            n_ok++;
            break;
        case VM_STATUS_UNPATCHED:
            status = g_strdup_printf("unpatched: %s", v->error);
            n_unpatched++;
            break;
        default:
            status = g_strdup_printf("error: %s", v->error);
            n_failed++;
        }
        releasable += vm_info_u64(info, "stats", "releasable");
        rss += v->has_rss ? v->rss : 0;
        cli_table_add(t, g_strdup(v->name),
                      info ? g_strdup(vm_info_str(info, "stats", "backend"))
                      : NULL,
                      info ? cli_size(vm_info_u64(info, "stats", "allocated"),
                                      opt_bytes) : NULL,
                      info ? cli_size(vm_info_u64(info, "stats", "held"),
                                      opt_bytes) : NULL,
                      info ? cli_size(vm_info_u64(info, "stats",
                                                  "releasable"), opt_bytes)
                      : NULL,
                      v->has_rss ? cli_size(v->rss, opt_bytes) : NULL,
                      info ? g_strdup_printf("%" G_GUINT64_FORMAT,
                                             release_count(info)) : NULL,
                      status);
    }
    cli_table_add(t, g_strdup("total"), g_strdup(""), g_strdup(""),
                  g_strdup(""), cli_size(releasable, opt_bytes),
                  cli_size(rss, opt_bytes), g_strdup(""),
                  g_strdup_printf("%u VMs: %u ok, %u unpatched, %u failed",
                                  visits->len, n_ok, n_unpatched, n_failed));
    cli_table_print(t, stdout);
}

static void print_json(GPtrArray *visits)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    static const char *const sizes[] = {
        "allocated", "held", "free", "releasable", NULL
    };
    static const char *const counters[] = {
        "manual", "automatic", "idle", "returned", NULL
    };
    guint64 releasable = 0, rss = 0;
    guint i, j, n[3] = { 0 };

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vms");
    json_builder_begin_array(b);
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        n[v->status]++;
        json_builder_begin_object(b);
        cli_json_str(b, "vm", v->name);
        cli_json_str(b, "address", v->address);
        cli_json_str(b, "status", vm_status_name(v->status));
        if (v->error) {
            cli_json_str(b, "error", v->error);
        }
        if (v->pid) {
            cli_json_u64(b, "pid", v->pid);
        }
        if (v->info) {
            cli_json_str(b, "backend", vm_info_str(v->info, "stats", "backend"));
            for (j = 0; sizes[j]; j++) {
                cli_json_u64(b, sizes[j], vm_info_u64(v->info, "stats",
                                                 sizes[j]));
            }
            releasable += vm_info_u64(v->info, "stats", "releasable");
        }
        if (v->has_rss) {
            cli_json_u64(b, "rss", v->rss);
            rss += v->rss;
        }
        if (v->info) {
            json_builder_set_member_name(b, "releases");
            json_builder_begin_object(b);
            for (j = 0; counters[j]; j++) {
                cli_json_u64(b, counters[j], vm_info_u64(v->info, "releases",
                                                    counters[j]));
            }
            json_builder_end_object(b);
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
    cli_json_u64(b, "releasable", releasable);
    cli_json_u64(b, "rss", rss);
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
        "freed that the allocator keeps and a release can give back.\n"
        "A QEMU without the command is listed as unpatched, with its RSS.\n"
        "Exit status 1 if a VM could not be asked.",
    .entries = entries,
    .check = check,
    .run = run,
};
