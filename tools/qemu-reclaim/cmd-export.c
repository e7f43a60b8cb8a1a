/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim export: the VMs' allocator figures for Prometheus, served
 * over HTTP and/or written as a node_exporter textfile.
 */
#include <glib-unix.h>
#include <libsoup/soup.h>

#include "cli.h"
#include "metrics.h"
#include "units.h"

#define DEFAULT_LISTEN "127.0.0.1:9864"

static char *opt_listen;
static char *opt_textfile;
static char *opt_interval;
static gboolean opt_once;

static guint interval_s = 15;

static const GOptionEntry entries[] = {
    { "listen", 'l', 0, G_OPTION_ARG_STRING, &opt_listen,
      "Serve /metrics on HOST:PORT (default " DEFAULT_LISTEN " unless "
      "--textfile is given)", "HOST:PORT" },
    { "textfile", 'f', 0, G_OPTION_ARG_FILENAME, &opt_textfile,
      "Write the metrics to FILE (atomically) for node_exporter's textfile "
      "collector", "FILE" },
    { "interval", 'i', 0, G_OPTION_ARG_STRING, &opt_interval,
      "Rewrite the textfile every SEC seconds (default 15)", "SEC" },
    { "once", 0, 0, G_OPTION_ARG_NONE, &opt_once,
      "Write the textfile once and exit", NULL },
    { NULL }
};

static gboolean check(CliCommon *common, GError **error)
{
    guint64 v;

    if (opt_interval) {
        if (!units_parse_uint(opt_interval, 1, 86400, "--interval", &v,
                              error)) {
            return FALSE;
        }
        interval_s = v;
    }
    if (opt_once && !opt_textfile) {
        g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                            "--once needs --textfile");
        return FALSE;
    }
    if (opt_once && opt_listen) {
        g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                            "--once writes a textfile and exits: it cannot "
                            "be used with --listen");
        return FALSE;
    }
    if (!opt_listen && !opt_textfile) {
        opt_listen = g_strdup(DEFAULT_LISTEN);
    }
    return TRUE;
}

typedef struct {
    CliCommon *common;
    GMainLoop *loop;
    SoupServer *server;
    GPtrArray *waiting;     /* SoupServerMessage paused until the pass ends */
    gboolean pass_running;
    gboolean pass_for_textfile;
    gint64 pass_started;
    int rc;
} Exporter;

static void start_pass(Exporter *ex);

static gboolean write_textfile(const char *text, GError **error)
{
    /* A temporary file renamed over the old one: readers never see half */
    return g_file_set_contents_full(opt_textfile, text, -1,
                                    G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                                    error);
}

static void answer(SoupServerMessage *msg, const char *text)
{
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg, METRICS_CONTENT_TYPE,
                                     SOUP_MEMORY_COPY, text, strlen(text));
    soup_server_message_unpause(msg);
}

static void on_pass(GPtrArray *visits, gpointer data)
{
    Exporter *ex = data;
    double seconds = (g_get_monotonic_time() - ex->pass_started) / 1e6;
    g_autofree char *text = metrics_render(visits, seconds);
    g_autoptr(GPtrArray) waiting = g_steal_pointer(&ex->waiting);
    guint i, down = 0;

    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (v->status == VM_STATUS_ERROR) {
            down++;
            if (ex->common->verbose) {
                cli_log("%s: %s", v->name, v->error);
            }
        }
    }
    if (down && opt_once) {
        cli_log("%u of %u VMs did not answer (qemu_reclaim_up 0)", down,
                visits->len);
    }
    g_ptr_array_unref(visits);
    ex->waiting = g_ptr_array_new_with_free_func(g_object_unref);
    ex->pass_running = FALSE;

    for (i = 0; i < waiting->len; i++) {
        answer(waiting->pdata[i], text);
    }
    if (ex->pass_for_textfile) {
        g_autoptr(GError) err = NULL;

        ex->pass_for_textfile = FALSE;
        if (!write_textfile(text, &err)) {
            cli_log("cannot write %s: %s", opt_textfile, err->message);
            ex->rc = EXIT_VM_FAILED;
        }
        if (opt_once) {
            g_main_loop_quit(ex->loop);
            return;
        }
    }
    if (ex->waiting->len) {
        start_pass(ex);     /* scrapes that came during the pass */
    }
}

static void start_pass(Exporter *ex)
{
    g_autoptr(GPtrArray) targets = NULL;

    if (ex->pass_running) {
        return;
    }
    targets = cli_pass_targets(ex->common);
    ex->pass_running = TRUE;
    ex->pass_started = g_get_monotonic_time();
    /* All VMs at once by default: a scrape then lasts one --timeout at most */
    vm_pass_start(targets, ex->common->timeout_ms, ex->common->jobs ?: 1024,
                  on_pass, ex);
}

static void on_disconnected(SoupServerMessage *msg, gpointer data)
{
    Exporter *ex = data;

    /* The scraper gave up: nothing to answer */
    if (ex->waiting) {
        g_ptr_array_remove(ex->waiting, msg);
    }
}

static void handle_metrics(SoupServer *server, SoupServerMessage *msg,
                           const char *path, GHashTable *query,
                           gpointer data)
{
    Exporter *ex = data;
    const char *method = soup_server_message_get_method(msg);

    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                                       NULL);
        soup_message_headers_append(
            soup_server_message_get_response_headers(msg), "Allow",
            "GET, HEAD");
        return;
    }
    if (strcmp(path, "/metrics")) {
        static const char page[] =
            "qemu-reclaim exporter: the metrics are at /metrics\n";

        soup_server_message_set_status(msg, strcmp(path, "/") ?
                                       SOUP_STATUS_NOT_FOUND : SOUP_STATUS_OK,
                                       NULL);
        soup_server_message_set_response(msg, "text/plain; charset=utf-8",
                                         SOUP_MEMORY_STATIC, page,
                                         sizeof(page) - 1);
        return;
    }
    soup_server_message_pause(msg);
    g_signal_connect(msg, "disconnected", G_CALLBACK(on_disconnected), ex);
    g_ptr_array_add(ex->waiting, g_object_ref(msg));
    start_pass(ex);
}

static gboolean on_textfile_timer(gpointer data)
{
    Exporter *ex = data;

    ex->pass_for_textfile = TRUE;
    start_pass(ex);
    return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer data)
{
    Exporter *ex = data;

    cli_log("exporter stopping");
    g_main_loop_quit(ex->loop);
    return G_SOURCE_REMOVE;
}

static gboolean listen_on(Exporter *ex, const char *hostport, GError **error)
{
    g_autoptr(GSocketConnectable) addr = NULL;
    g_autoptr(GSocketAddressEnumerator) en = NULL;
    g_autoptr(GSocketAddress) sa = NULL;

    addr = g_network_address_parse(hostport, 0, error);
    if (!addr) {
        g_prefix_error(error, "--listen %s: ", hostport);
        return FALSE;
    }
    if (!g_network_address_get_port(G_NETWORK_ADDRESS(addr))) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--listen %s: HOST:PORT with a port above 0", hostport);
        return FALSE;
    }
    en = g_socket_connectable_enumerate(addr);
    sa = g_socket_address_enumerator_next(en, NULL, error);
    if (!sa) {
        g_prefix_error(error, "--listen %s: ", hostport);
        return FALSE;
    }
    if (!soup_server_listen(ex->server, sa, 0, error)) {
        g_prefix_error(error, "cannot listen on %s: ", hostport);
        return FALSE;
    }
    return TRUE;
}

static int run(CliCommon *common)
{
    g_autoptr(GError) err = NULL;
    Exporter ex = { .common = common };

    ex.loop = g_main_loop_new(NULL, FALSE);
    ex.waiting = g_ptr_array_new_with_free_func(g_object_unref);
    if (opt_listen) {
        ex.server = soup_server_new("server-header", "qemu-reclaim ", NULL);
        soup_server_add_handler(ex.server, NULL, handle_metrics, &ex, NULL);
        if (!listen_on(&ex, opt_listen, &err)) {
            g_printerr("qemu-reclaim: %s\n", err->message);
            return EXIT_USAGE;
        }
        cli_log("serving metrics on http://%s/metrics", opt_listen);
    }
    if (opt_textfile) {
        on_textfile_timer(&ex);
        if (!opt_once) {
            g_timeout_add_seconds(interval_s, on_textfile_timer, &ex);
        }
    }
    g_unix_signal_add(SIGTERM, on_signal, &ex);
    g_unix_signal_add(SIGINT, on_signal, &ex);
    g_main_loop_run(ex.loop);

    g_clear_object(&ex.server);
    g_clear_pointer(&ex.waiting, g_ptr_array_unref);
    g_main_loop_unref(ex.loop);
    return ex.rc;
}

const CliCommand cli_export = {
    .name = "export",
    .parameter = "[TARGET...]",
    .summary = "serve the figures to Prometheus, or write a textfile",
    .description =
        "Serves Prometheus metrics on http://HOST:PORT/metrics (libsoup):\n"
        "every scrape asks every VM, each within --timeout, so a slow VM\n"
        "never holds a scrape past it; a VM that does not answer shows as\n"
        "qemu_reclaim_up 0.  With --textfile, writes the same metrics to a\n"
        "file for node_exporter's textfile collector (name it *.prom).",
    .entries = entries,
    .check = check,
    .run = run,
};
