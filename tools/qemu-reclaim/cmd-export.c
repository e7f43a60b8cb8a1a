/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim export: the VMs' allocator figures for Prometheus, served
 * over HTTP and/or written as a node_exporter textfile.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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
static char *opt_max_age;
static char *opt_idle_timeout;

static guint interval_s = 15;
static guint max_age_s = 5;
static guint idle_timeout_s = 10;

/* How long accept() rests after it failed (out of file descriptors) */
#define ACCEPT_RETRY_MS 250

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
    { "max-age", 0, 0, G_OPTION_ARG_STRING, &opt_max_age,
      "Answer a scrape with the last pass's metrics if that pass ended less "
      "than SEC seconds ago (default 5; 0: every scrape asks the VMs)",
      "SEC" },
    { "idle-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_idle_timeout,
      "Close an HTTP connection that sends or reads nothing for SEC "
      "seconds (default 10)", "SEC" },
    G_OPTION_ENTRY_NULL
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
    if (opt_max_age) {
        if (!units_parse_uint(opt_max_age, 0, 86400, "--max-age", &v,
                              error)) {
            return FALSE;
        }
        max_age_s = v;
    }
    if (opt_idle_timeout) {
        if (!units_parse_uint(opt_idle_timeout, 1, 3600, "--idle-timeout",
                              &v, error)) {
            return FALSE;
        }
        idle_timeout_s = v;
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
    GSocket *listener;
    GSource *accept_source;     /* NULL while accept() rests */
    guint accept_retry;         /* the timeout that re-arms it */
    gboolean accept_failing;    /* logged once per streak of failures */
    GPtrArray *waiting;     /* SoupServerMessage paused until the pass ends */
    gboolean pass_running;
    gboolean pass_for_textfile;
    gint64 pass_started;
    GBytes *page;           /* the metrics of the last pass, or NULL */
    gint64 page_time;       /* when that pass ended, monotonic */
    int rc;
} Exporter;

static void start_pass(Exporter *ex);

static gboolean write_textfile(GBytes *page, GError **error)
{
    gsize len;
    const char *text = g_bytes_get_data(page, &len);

    /* A temporary file renamed over the old one: readers never see half */
    return g_file_set_contents_full(opt_textfile, text, len,
                                    G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                                    error);
}

static void answer(SoupServerMessage *msg, GBytes *page)
{
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                 "Content-Type", METRICS_CONTENT_TYPE);
    /* Every scrape of a pass shares its page: no copy */
    soup_message_body_append_bytes(soup_server_message_get_response_body(msg),
                                   page);
}

/*
 * Whether the last pass is recent enough to answer a scrape.  The age
 * counts from the end of the pass: scrapes then never start passes closer
 * than --max-age apart, and never hold the VMs' QMP sockets (one client at
 * a time; PVE's own management needs them) more often than that, however
 * many Prometheus servers scrape and however long a pass takes.
 */
static gboolean page_is_fresh(Exporter *ex)
{
    return ex->page &&
           g_get_monotonic_time() - ex->page_time <
           (gint64)max_age_s * G_USEC_PER_SEC;
}

static void on_pass(GPtrArray *visits, gpointer data)
{
    Exporter *ex = data;
    double seconds = (g_get_monotonic_time() - ex->pass_started) / 1e6;
    char *text = metrics_render(visits, seconds);
    g_autoptr(GPtrArray) waiting = g_steal_pointer(&ex->waiting);
    guint i, down = 0;

    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (v->status == VM_STATUS_ERROR) {
            down++;
            g_debug("%s: %s", v->name, v->error);
        }
    }
    if (down && opt_once) {
        g_warning("%u of %u VMs did not answer (qemu_reclaim_up 0)", down,
                  visits->len);
    }
    g_ptr_array_unref(visits);
    g_clear_pointer(&ex->page, g_bytes_unref);
    ex->page = g_bytes_new_take(text, strlen(text));
    ex->page_time = g_get_monotonic_time();
    ex->waiting = g_ptr_array_new_with_free_func(g_object_unref);
    ex->pass_running = FALSE;

    for (i = 0; i < waiting->len; i++) {
        answer(waiting->pdata[i], ex->page);
        soup_server_message_unpause(waiting->pdata[i]);
    }
    if (ex->pass_for_textfile) {
        g_autoptr(GError) err = NULL;

        ex->pass_for_textfile = FALSE;
        if (!write_textfile(ex->page, &err)) {
            g_warning("cannot write %s: %s", opt_textfile, err->message);
            ex->rc = EXIT_VM_FAILED;
        }
        if (opt_once) {
            g_main_loop_quit(ex->loop);
            return;
        }
    }
}

/* A pass over every VM, unless one is running: callers then share it. */
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

    /*
     * One request per connection.  libsoup closes connections handed to
     * it with soup_server_accept_iostream() after each answer anyway; and
     * libsoup 3.2 (Debian 12) never closes a kept-alive connection that
     * the client closes, or that times out, between two requests (fixed
     * in 3.3.0): a file descriptor lost each time.  A scrape every 15 s
     * does not miss keep-alive.
     */
    soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                 "Connection", "close");
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
    if (page_is_fresh(ex)) {
        answer(msg, ex->page);
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

    /* Always a pass of its own (or the one running): --interval rules */
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

/* ---- HTTP connections ------------------------------------------------ */

static gboolean on_incoming(GSocket *listener, GIOCondition condition,
                            gpointer data);

static void accept_arm(Exporter *ex)
{
    ex->accept_source = g_socket_create_source(ex->listener, G_IO_IN, NULL);
    g_source_set_callback(ex->accept_source, G_SOURCE_FUNC(on_incoming), ex,
                          NULL);
    g_source_attach(ex->accept_source, NULL);
}

static gboolean on_accept_retry(gpointer data)
{
    Exporter *ex = data;

    ex->accept_retry = 0;
    accept_arm(ex);
    return G_SOURCE_REMOVE;
}

/*
 * The exporter accepts its HTTP connections itself, and hands them to
 * libsoup, for two reasons:
 *  - libsoup's own listener (3.2 to this day) stops accepting for good the
 *    first time accept() fails: out of file descriptors once, the
 *    exporter would never answer again;
 *  - each connection's GSocket gets the idle timeout (see below), which
 *    SoupServer has no setting for.
 */
static gboolean on_incoming(GSocket *listener, GIOCondition condition,
                            gpointer data)
{
    Exporter *ex = data;
    g_autoptr(GError) err = NULL;
    g_autoptr(GSocket) sock = NULL;
    g_autoptr(GSocketAddress) local = NULL;
    g_autoptr(GSocketAddress) remote = NULL;
    g_autoptr(GSocketConnection) conn = NULL;

    sock = g_socket_accept(listener, NULL, &err);
    if (!sock) {
        if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
            return G_SOURCE_CONTINUE;
        }
        /*
         * Out of file descriptors (or memory).  The client waits in the
         * listen backlog until the idle timeout has closed a connection;
         * polling again at once would spin, the backlog still readable.
         */
        if (!ex->accept_failing) {
            g_warning("cannot accept HTTP connections: %s; retrying every "
                      "%d ms", err->message, ACCEPT_RETRY_MS);
            ex->accept_failing = TRUE;
        }
        g_clear_pointer(&ex->accept_source, g_source_unref);
        ex->accept_retry = g_timeout_add(ACCEPT_RETRY_MS, on_accept_retry,
                                         ex);
        return G_SOURCE_REMOVE;
    }
    if (ex->accept_failing) {
        cli_log("accepting HTTP connections again");
        ex->accept_failing = FALSE;
    }
    /*
     * GSocket's timeout bounds every wait of libsoup on this socket: a
     * client that connects and sends nothing, sends half a request, or
     * does not read the answer, gets G_IO_ERROR_TIMED_OUT, and libsoup
     * closes the connection.  A scrape waiting for its pass is paused:
     * libsoup does not wait on the socket then, so no pass is cut short.
     */
    g_socket_set_timeout(sock, idle_timeout_s);
    /* libsoup writes the headers and the body apart: no Nagle delay */
    g_socket_set_option(sock, IPPROTO_TCP, TCP_NODELAY, TRUE, NULL);
    local = g_socket_get_local_address(sock, NULL);
    remote = g_socket_get_remote_address(sock, NULL);
    if (!local || !remote) {
        return G_SOURCE_CONTINUE;       /* reset already */
    }
    conn = g_socket_connection_factory_create_connection(sock);
    soup_server_accept_iostream(ex->server, G_IO_STREAM(conn), local, remote,
                                NULL);
    return G_SOURCE_CONTINUE;
}

static gboolean listen_on(Exporter *ex, const char *hostport, GError **error)
{
    g_autoptr(GSocketConnectable) addr = NULL;
    g_autoptr(GSocketAddressEnumerator) en = NULL;
    g_autoptr(GSocketAddress) sa = NULL;
    GSocketFamily family;

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
    family = g_socket_address_get_family(sa);
    ex->listener = g_socket_new(family, G_SOCKET_TYPE_STREAM,
                                G_SOCKET_PROTOCOL_DEFAULT, error);
    if (!ex->listener) {
        g_prefix_error(error, "cannot listen on %s: ", hostport);
        return FALSE;
    }
    if (family == G_SOCKET_FAMILY_IPV6) {
        /* As soup_server_listen() did: [::] is IPv6 only */
        g_socket_set_option(ex->listener, IPPROTO_IPV6, IPV6_V6ONLY, TRUE,
                            NULL);
    }
    /* accept() in a main loop: never wait for a client that went away */
    g_socket_set_blocking(ex->listener, FALSE);
    /* Room for the clients that wait while accept() rests (GLib: 10) */
    g_socket_set_listen_backlog(ex->listener, SOMAXCONN);
    if (!g_socket_bind(ex->listener, sa, TRUE, error) ||
        !g_socket_listen(ex->listener, error)) {
        g_prefix_error(error, "cannot listen on %s: ", hostport);
        return FALSE;
    }
    accept_arm(ex);
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

    if (ex.accept_source) {
        g_source_destroy(ex.accept_source);
        g_clear_pointer(&ex.accept_source, g_source_unref);
    }
    g_clear_handle_id(&ex.accept_retry, g_source_remove);
    g_clear_object(&ex.listener);
    g_clear_object(&ex.server);
    g_clear_pointer(&ex.waiting, g_ptr_array_unref);
    g_clear_pointer(&ex.page, g_bytes_unref);
    g_main_loop_unref(ex.loop);
    return ex.rc;
}

const CliCommand cli_export = {
    .name = "export",
    .parameter = "[TARGET...]",
    .summary = "serve the figures to Prometheus, or write a textfile",
    .description =
        "Serves Prometheus metrics on http://HOST:PORT/metrics (libsoup):\n"
        "a scrape asks every VM, each within --timeout, so a slow VM never\n"
        "holds a scrape past it, unless the last pass ended less than\n"
        "--max-age seconds ago: that one answers, and scrapes that come\n"
        "during a pass wait for it.  A VM that does not answer shows as\n"
        "qemu_reclaim_up 0.  With --textfile, writes the same metrics to a\n"
        "file for node_exporter's textfile collector (name it *.prom).",
    .entries = entries,
    .check = check,
    .run = run,
};
