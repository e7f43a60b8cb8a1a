/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim release: give free allocator memory back on many VMs, a
 * few at a time so that a host is not hit all at once.
 */
#include <unistd.h>

#include "cli.h"
#include "units.h"

static char *opt_min;
static char *opt_max_bytes;
static char *opt_release_timeout;
static gboolean opt_dry_run;
static gboolean opt_json;

static guint64 min_releasable;
static guint release_timeout_ms = 120000;

static const GOptionEntry entries[] = {
    { "min-releasable", 'm', 0, G_OPTION_ARG_STRING, &opt_min,
      "Only VMs with at least SIZE releasable (default: any)", "SIZE" },
    /* Gone with QEMU's max-bytes: still parsed, to say so */
    { "max-bytes", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING,
      &opt_max_bytes, NULL, "SIZE" },
    { "release-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_release_timeout,
      "Give up on a release after MS milliseconds (default 120000)", "MS" },
    { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &opt_dry_run,
      "Say what would be released, release nothing", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json,
      "Print JSON for scripts", NULL },
    G_OPTION_ENTRY_NULL
};

static gboolean check(CliCommon *common, GError **error)
{
    guint64 v;

    if (opt_min && !units_parse_size(opt_min, &min_releasable, error)) {
        g_prefix_error(error, "--min-releasable: ");
        return FALSE;
    }
    if (opt_max_bytes) {
        g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "--max-bytes is no longer supported: QEMU's "
                            "x-release-free-memory takes no limit and "
                            "returns all free memory it can");
        return FALSE;
    }
    if (opt_release_timeout) {
        if (!units_parse_uint(opt_release_timeout, 1, G_MAXUINT32,
                              "--release-timeout", &v, error)) {
            return FALSE;
        }
        release_timeout_ms = v;
    }
    return TRUE;
}

typedef enum {
    OUTCOME_RELEASED,
    OUTCOME_WOULD_RELEASE,
    OUTCOME_SKIPPED,
    OUTCOME_FAILED,
} Outcome;

static const char *const outcome_names[] = {
    [OUTCOME_RELEASED] = "released",
    [OUTCOME_WOULD_RELEASE] = "would-release",
    [OUTCOME_SKIPPED] = "skipped",
    [OUTCOME_FAILED] = "failed",
};

typedef struct ReleaseRun ReleaseRun;

/* What QEMU told; the has_ flags say which of the optional figures */
typedef struct {
    ReleaseRun *run;
    VmVisit *visit;
    Outcome outcome;
    char *reason;
    gboolean has_releasable;
    guint64 releasable;
    gboolean has_returned;      /* glibc does not count it */
    guint64 returned;
    gboolean has_rss_before;
    guint64 rss_before;
    gboolean has_rss_after;
    guint64 rss_after;
    guint64 duration_us;
} Job;

struct ReleaseRun {
    CliCommon *common;
    GPtrArray *targets;
    Job *jobs;
    Runner *runner;
    GMainLoop *loop;
    gboolean progress;      /* stderr is a terminal */
    guint64 returned;
    guint failed;
};

static void show_progress(ReleaseRun *run)
{
    g_autofree char *returned = NULL;

    if (!run->progress) {
        return;
    }
    returned = units_format_size(run->returned);
    fprintf(stderr, "\r\033[K[%u/%u] %u running, %s returned, %u failed",
            runner_n_finished(run->runner), runner_n_jobs(run->runner),
            runner_n_running(run->runner), returned, run->failed);
    fflush(stderr);
}

static void job_end(Job *job, Outcome outcome, char *reason)
{
    job->outcome = outcome;
    job->reason = reason;
    if (outcome == OUTCOME_FAILED) {
        job->run->failed++;
    }
    job->run->returned += job->returned;
    if (job->visit->client) {
        qmp_client_close(job->visit->client);
        g_clear_object(&job->visit->client);
    }
    runner_job_done(job->run->runner);
    show_progress(job->run);
}

static void on_released(GObject *source, GAsyncResult *res, gpointer data)
{
    Job *job = data;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute_finish(QMP_CLIENT(source),
                                                        res, &err);
    JsonObject *release;

    if (!ret) {
        job_end(job, OUTCOME_FAILED, g_strdup_printf(
                    "release failed: %s", err->message));
        return;
    }
    /* The answer is the AllocatorRelease itself */
    release = JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret) : NULL;
    if (!vm_info_get_u64(release, NULL, "duration-us", &job->duration_us)) {
        job_end(job, OUTCOME_FAILED,
                g_strdup("x-release-free-memory answered without figures"));
        return;
    }
    job->has_returned = vm_info_get_u64(release, NULL, "returned",
                                        &job->returned);
    job->has_rss_before = vm_info_get_u64(release, NULL,
                                          "process-rss-before",
                                          &job->rss_before);
    job->has_rss_after = vm_info_get_u64(release, NULL, "process-rss-after",
                                         &job->rss_after);
    job_end(job, OUTCOME_RELEASED, NULL);
}

static void on_visit(VmVisit *visit, gpointer data)
{
    Job *job = data;
    JsonObject *info = visit->info;
    const char *backend;

    job->visit = visit;
    if (visit->status == VM_STATUS_ERROR) {
        job_end(job, OUTCOME_FAILED, g_strdup(visit->error));
        return;
    }
    if (visit->status == VM_STATUS_UNPATCHED) {
        job_end(job, OUTCOME_SKIPPED, g_strdup_printf(
                    "unpatched (%s)", visit->error));
        return;
    }
    backend = vm_info_backend(info);
    job->has_releasable = vm_info_get_u64(info, "stats", "releasable",
                                          &job->releasable);
    if (!vm_info_can_release(info)) {
        job_end(job, OUTCOME_SKIPPED, g_strdup_printf(
                    "QEMU's allocator (%s) cannot release memory", backend));
        return;
    }
    if (min_releasable && !job->has_releasable) {
        job_end(job, OUTCOME_SKIPPED, g_strdup_printf(
                    "releasable unknown (%s does not tell), and "
                    "--min-releasable was given", backend));
        return;
    }
    if (job->releasable < min_releasable) {
        g_autofree char *have = units_format_size(job->releasable);
        g_autofree char *want = units_format_size(min_releasable);

        job_end(job, OUTCOME_SKIPPED, g_strdup_printf(
                    "%s releasable, below %s", have, want));
        return;
    }
    if (opt_dry_run) {
        job_end(job, OUTCOME_WOULD_RELEASE, NULL);
        return;
    }
    qmp_client_execute_async(visit->client, "x-release-free-memory", NULL,
                             release_timeout_ms, NULL, on_released, job);
}

static void start_job(Runner *runner, guint index, gpointer data)
{
    ReleaseRun *run = data;

    vm_visit_start(run->targets->pdata[index], run->common->timeout_ms,
                   on_visit, &run->jobs[index]);
    show_progress(run);
}

static void on_all_done(Runner *runner, gpointer data)
{
    ReleaseRun *run = data;

    if (run->progress) {
        fprintf(stderr, "\r\033[K");
    }
    g_main_loop_quit(run->loop);
}

static char *job_status(Job *job)
{
    if (!job->reason) {
        return g_strdup(outcome_names[job->outcome]);
    }
    return g_strdup_printf("%s: %s", outcome_names[job->outcome],
                           job->reason);
}

static void print_table(ReleaseRun *run)
{
    g_autoptr(CliTable) t = cli_table_new("lrrrrrl", "VM", "RELEASABLE",
                                          "RETURNED", "RSS BEFORE",
                                          "RSS AFTER", "TIME", "STATUS",
                                          NULL);
    g_autofree char *total = units_format_size(run->returned);
    g_autofree char *uncounted = NULL;
    guint i, n[4] = { 0 }, n_uncounted = 0;

    for (i = 0; i < run->targets->len; i++) {
        Job *job = &run->jobs[i];
        gboolean done = job->outcome == OUTCOME_RELEASED;

        n[job->outcome]++;
        n_uncounted += done && !job->has_returned;
        cli_table_add(t, g_strdup(job->visit->name),
                      job->has_releasable ?
                      units_format_size(job->releasable) : NULL,
                      done && job->has_returned ?
                      units_format_size(job->returned) : NULL,
                      done && job->has_rss_before ?
                      units_format_size(job->rss_before) : NULL,
                      done && job->has_rss_after ?
                      units_format_size(job->rss_after) : NULL,
                      done ? units_format_duration_us(job->duration_us) :
                      NULL,
                      job_status(job));
    }
    cli_table_print(t, stdout);
    if (opt_dry_run) {
        printf("total: %u VMs would release; %u skipped; %u failed "
               "(dry run: nothing released)\n",
               n[OUTCOME_WOULD_RELEASE], n[OUTCOME_SKIPPED],
               n[OUTCOME_FAILED]);
    } else {
        guint counted = n[OUTCOME_RELEASED] - n_uncounted;

        /* glibc does not count what it returns: those VMs apart */
        uncounted = n_uncounted ?
            g_strdup_printf(" (and %u VM%s released without a count)",
                            n_uncounted, n_uncounted == 1 ? "" : "s") :
            g_strdup("");
        printf("total: %s returned by %u VM%s%s; %u skipped; %u failed\n",
               total, counted, counted == 1 ? "" : "s", uncounted,
               n[OUTCOME_SKIPPED], n[OUTCOME_FAILED]);
    }
}

static void print_json(ReleaseRun *run)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    guint i, n[4] = { 0 }, n_uncounted = 0;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vms");
    json_builder_begin_array(b);
    for (i = 0; i < run->targets->len; i++) {
        Job *job = &run->jobs[i];

        n[job->outcome]++;
        n_uncounted += job->outcome == OUTCOME_RELEASED && !job->has_returned;
        json_builder_begin_object(b);
        cli_json_str(b, "vm", job->visit->name);
        cli_json_str(b, "address", job->visit->address);
        cli_json_str(b, "status", outcome_names[job->outcome]);
        if (job->reason) {
            cli_json_str(b, job->outcome == OUTCOME_FAILED ? "error" :
                         "reason", job->reason);
        }
        /* Figures QEMU did not tell are left out, never given as 0 */
        if (job->has_releasable) {
            cli_json_u64(b, "releasable", job->releasable);
        }
        if (job->outcome == OUTCOME_RELEASED) {
            if (job->has_returned) {
                cli_json_u64(b, "returned", job->returned);
            }
            if (job->has_rss_before) {
                cli_json_u64(b, "rss-before", job->rss_before);
            }
            if (job->has_rss_after) {
                cli_json_u64(b, "rss-after", job->rss_after);
            }
            cli_json_u64(b, "duration-us", job->duration_us);
        }
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "total");
    json_builder_begin_object(b);
    /* What was counted; "uncounted": released VMs that did not count */
    cli_json_u64(b, "returned", run->returned);
    cli_json_u64(b, "released", n[OUTCOME_RELEASED]);
    cli_json_u64(b, "uncounted", n_uncounted);
    cli_json_u64(b, "would-release", n[OUTCOME_WOULD_RELEASE]);
    cli_json_u64(b, "skipped", n[OUTCOME_SKIPPED]);
    cli_json_u64(b, "failed", n[OUTCOME_FAILED]);
    json_builder_end_object(b);
    json_builder_end_object(b);
    cli_print_json(b);
}

static int run(CliCommon *common)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) targets = cli_targets(common, &err);
    ReleaseRun run = { 0 };
    guint i;

    if (!targets) {
        g_printerr("qemu-reclaim: %s\n", err->message);
        return EXIT_USAGE;
    }
    run.common = common;
    run.targets = targets;
    run.jobs = g_new0(Job, targets->len);
    for (i = 0; i < targets->len; i++) {
        run.jobs[i].run = &run;
    }
    run.progress = isatty(STDERR_FILENO) && !opt_json;
    run.loop = g_main_loop_new(NULL, FALSE);
    run.runner = runner_new(targets->len, common->jobs ?: 2, start_job,
                            on_all_done, &run);
    runner_start(run.runner);
    g_main_loop_run(run.loop);

    if (opt_json) {
        print_json(&run);
    } else {
        print_table(&run);
    }
    for (i = 0; i < targets->len; i++) {
        vm_visit_free(run.jobs[i].visit);
        g_free(run.jobs[i].reason);
    }
    g_free(run.jobs);
    runner_free(run.runner);
    g_main_loop_unref(run.loop);
    return run.failed ? EXIT_VM_FAILED : EXIT_OK;
}

const CliCommand cli_release = {
    .name = "release",
    .parameter = "[TARGET...]",
    .summary = "return free allocator memory to the OS",
    .description =
        "Runs x-release-free-memory on every chosen VM, --jobs at a time\n"
        "(default 2), and prints what each returned ('-' where the\n"
        "allocator does not count it: glibc).  VMs below --min-releasable,\n"
        "VMs whose releasable memory is unknown when it is given, and\n"
        "QEMUs that cannot release or lack the command are skipped.\n"
        "Exit status 1 if a release failed on any VM.",
    .entries = entries,
    .check = check,
    .run = run,
};
