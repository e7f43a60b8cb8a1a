/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QMP client against an in-process fake monitor: a GSocketService on a
 * real Unix socket whose connections are served, each in its own thread,
 * by a script of the test.  The client runs on the test's main loop as it
 * does in the tool.  Under valgrind (the test command runs it so) this also
 * shows that a connection's requests leave nothing behind.
 */
#include <glib/gstdio.h>
#include <unistd.h>

#include "qmp-client.h"

#define GREETING \
    "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 10, \"minor\": 2, " \
    "\"micro\": 2}, \"package\": \"\"}, \"capabilities\": []}}"

/* ---- the fake monitor ------------------------------------------------- */

typedef struct Peer Peer;
typedef void (*PeerScript)(Peer *peer);

struct Peer {
    GDataInputStream *in;
    GOutputStream *out;
    GAsyncQueue *go;        /* the test's signals to the script */
    gint received;          /* commands read so far */
    gpointer data;          /* the test's */
};

typedef struct {
    GSocketService *service;
    char *dir;
    char *path;
    PeerScript script;
    Peer *peer;             /* the last connection's */
    GAsyncQueue *go;
    gpointer data;
} FakeMonitor;

static void peer_send(Peer *peer, const char *text)
{
    g_autoptr(GError) err = NULL;

    /* The client may have gone, which is what some tests are about */
    g_output_stream_write_all(peer->out, text, strlen(text), NULL, NULL,
                              &err);
}

static void peer_sendf(Peer *peer, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void peer_sendf(Peer *peer, const char *fmt, ...)
{
    g_autofree char *text = NULL;
    va_list ap;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    peer_send(peer, text);
}

/* The next command the client sent, or NULL when it closed. */
static JsonObject *peer_recv(Peer *peer)
{
    g_autofree char *line = NULL;
    g_autoptr(JsonNode) node = NULL;

    line = g_data_input_stream_read_line_utf8(peer->in, NULL, NULL, NULL);
    if (!line) {
        return NULL;
    }
    node = json_from_string(line, NULL);
    g_assert_nonnull(node);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(node));
    g_atomic_int_inc(&peer->received);
    return json_object_ref(json_node_get_object(node));
}

/* Read a command and check its name; returns its id. */
static char *peer_expect(Peer *peer, const char *command)
{
    g_autoptr(JsonObject) cmd = peer_recv(peer);

    g_assert_nonnull(cmd);
    g_assert_cmpstr(json_object_get_string_member(cmd, "execute"), ==,
                    command);
    return g_strdup(json_object_get_string_member(cmd, "id"));
}

/* The greeting and qmp_capabilities, as QEMU does them. */
static void peer_handshake(Peer *peer)
{
    g_autofree char *id = NULL;

    peer_send(peer, GREETING "\r\n");
    id = peer_expect(peer, "qmp_capabilities");
    peer_sendf(peer, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
}

static void peer_wait_closed(Peer *peer)
{
    g_autoptr(JsonObject) cmd = peer_recv(peer);

    g_assert_null(cmd);
}

static gboolean on_run(GThreadedSocketService *service,
                       GSocketConnection *conn, GObject *source,
                       gpointer data)
{
    FakeMonitor *fm = data;
    Peer peer = {
        .in = g_data_input_stream_new(
            g_io_stream_get_input_stream(G_IO_STREAM(conn))),
        .out = g_io_stream_get_output_stream(G_IO_STREAM(conn)),
        .go = g_async_queue_ref(fm->go),
        .data = fm->data,
    };

    g_data_input_stream_set_newline_type(peer.in,
                                         G_DATA_STREAM_NEWLINE_TYPE_LF);
    g_atomic_pointer_set(&fm->peer, &peer);
    fm->script(&peer);
    g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
    g_object_unref(peer.in);
    g_async_queue_unref(peer.go);
    return TRUE;
}

static FakeMonitor *fake_monitor_new(PeerScript script, gpointer data)
{
    FakeMonitor *fm = g_new0(FakeMonitor, 1);
    g_autoptr(GSocketAddress) addr = NULL;
    g_autoptr(GError) err = NULL;

    fm->dir = g_dir_make_tmp("test-qmp-client-XXXXXX", &err);
    g_assert_no_error(err);
    fm->path = g_build_filename(fm->dir, "qmp.sock", NULL);
    fm->script = script;
    fm->data = data;
    fm->go = g_async_queue_new();
    fm->service = g_threaded_socket_service_new(4);
    addr = g_unix_socket_address_new(fm->path);
    g_socket_listener_add_address(G_SOCKET_LISTENER(fm->service), addr,
                                  G_SOCKET_TYPE_STREAM,
                                  G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL,
                                  &err);
    g_assert_no_error(err);
    g_signal_connect(fm->service, "run", G_CALLBACK(on_run), fm);
    g_socket_service_start(fm->service);
    return fm;
}

/* Tell the script to go on. */
static void fake_monitor_go(FakeMonitor *fm)
{
    g_async_queue_push(fm->go, GINT_TO_POINTER(1));
}

static void peer_wait_go(Peer *peer)
{
    g_async_queue_pop(peer->go);
}

static void fake_monitor_free(FakeMonitor *fm)
{
    g_socket_service_stop(fm->service);
    g_socket_listener_close(G_SOCKET_LISTENER(fm->service));
    /* The threads of the service hold it until their scripts end */
    g_object_unref(fm->service);
    g_unlink(fm->path);
    g_rmdir(fm->dir);
    g_async_queue_unref(fm->go);
    g_free(fm->path);
    g_free(fm->dir);
    g_free(fm);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FakeMonitor, fake_monitor_free)

/* ---- the client side -------------------------------------------------- */

/* Iterate the main loop until *@done, or fail after 10 s. */
static void spin_until(gboolean *done)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (!*done) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        if (!g_main_context_iteration(NULL, FALSE)) {
            g_usleep(1000);
        }
    }
}

static void spin_until_received(Peer **peer, gint n)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (!g_atomic_pointer_get(peer) ||
           g_atomic_int_get(&(*peer)->received) < n) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        if (!g_main_context_iteration(NULL, FALSE)) {
            g_usleep(1000);
        }
    }
}

typedef struct {
    gboolean done;
    gboolean ok;
    JsonNode *ret;
    GError *error;
} Outcome;

static void outcome_clear(Outcome *o)
{
    g_clear_pointer(&o->ret, json_node_unref);
    g_clear_error(&o->error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Outcome, outcome_clear)

static void on_connected(GObject *source, GAsyncResult *res, gpointer data)
{
    Outcome *o = data;

    o->ok = qmp_client_connect_finish(QMP_CLIENT(source), res, &o->error);
    o->done = TRUE;
}

static void on_executed(GObject *source, GAsyncResult *res, gpointer data)
{
    Outcome *o = data;

    o->ret = qmp_client_execute_finish(QMP_CLIENT(source), res, &o->error);
    o->ok = o->ret != NULL;
    o->done = TRUE;
}

static QmpClient *connect_to(FakeMonitor *fm, guint timeout_ms,
                             Outcome *o)
{
    QmpClient *client = qmp_client_new(fm->path);

    qmp_client_connect_async(client, timeout_ms, NULL, on_connected, o);
    spin_until(&o->done);
    return client;
}

static void execute(QmpClient *client, const char *command, guint timeout_ms,
                    Outcome *o)
{
    qmp_client_execute_async(client, command, NULL, timeout_ms, NULL,
                             on_executed, o);
}

/* The "name" member of an answer {"return": {"name": ...}} */
static const char *returned_name(Outcome *o)
{
    g_assert_true(o->ok);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(o->ret));
    return json_object_get_string_member(json_node_get_object(o->ret),
                                         "name");
}

/* ---- the tests -------------------------------------------------------- */

static void script_handshake_only(Peer *peer)
{
    peer_handshake(peer);
    peer_wait_closed(peer);
}

static void test_connect(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_handshake_only, NULL);
    g_auto(Outcome) o = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);

    g_assert_no_error(o.error);
    g_assert_true(o.ok);
    g_assert_cmpstr(qmp_client_get_qemu_version(client), ==, "10.2.2");
    /* SO_PEERCRED: the monitor is this very process */
    g_assert_cmpint(qmp_client_get_peer_pid(client), ==, getpid());
    qmp_client_close(client);
}

/* Without a time limit: nothing is timed, nothing to stop */
static void test_connect_no_timeout(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_handshake_only, NULL);
    g_auto(Outcome) o = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 0, &o);

    g_assert_no_error(o.error);
    qmp_client_close(client);
}

/*
 * Three commands in flight, answered last first, with events before,
 * between and after the answers: each answer reaches its own caller.
 */
static void script_out_of_order(Peer *peer)
{
    g_autofree char *a = NULL, *b = NULL, *c = NULL;

    peer_handshake(peer);
    a = peer_expect(peer, "cmd-a");
    b = peer_expect(peer, "cmd-b");
    c = peer_expect(peer, "cmd-c");
    peer_send(peer, "{\"event\": \"E1\", \"data\": {}}\r\n");
    peer_sendf(peer, "{\"return\": {\"name\": \"c\"}, \"id\": \"%s\"}\r\n",
               c);
    peer_send(peer, "{\"event\": \"E2\", \"data\": {}}\r\n");
    /* Two messages in one write, the second split across two */
    peer_sendf(peer, "{\"return\": {\"name\": \"a\"}, \"id\": \"%s\"}"
               "{\"return\": {\"na", a);
    g_usleep(20000);
    peer_sendf(peer, "me\": \"b\"}, \"id\": \"%s\"}\r\n", b);
    peer_send(peer, "{\"event\": \"E3\", \"data\": {}}\r\n");
    peer_wait_closed(peer);
}

static void on_event(QmpClient *client, JsonObject *event, gpointer data)
{
    GString *seen = data;

    g_string_append(seen, json_object_get_string_member(event, "event"));
}

static void test_ids(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_out_of_order, NULL);
    g_auto(Outcome) o = { 0 }, a = { 0 }, b = { 0 }, c = { 0 };
    g_autoptr(GString) events = g_string_new("");
    g_autoptr(QmpClient) client = NULL;

    client = qmp_client_new(fm->path);
    qmp_client_set_event_func(client, on_event, events);
    qmp_client_connect_async(client, 5000, NULL, on_connected, &o);
    spin_until(&o.done);
    g_assert_true(o.ok);
    execute(client, "cmd-a", 5000, &a);
    execute(client, "cmd-b", 5000, &b);
    execute(client, "cmd-c", 5000, &c);
    spin_until(&a.done);
    spin_until(&b.done);
    spin_until(&c.done);
    g_assert_cmpstr(returned_name(&a), ==, "a");
    g_assert_cmpstr(returned_name(&b), ==, "b");
    g_assert_cmpstr(returned_name(&c), ==, "c");
    while (events->len < 6) {
        g_main_context_iteration(NULL, TRUE);
    }
    g_assert_cmpstr(events->str, ==, "E1E2E3");
    qmp_client_close(client);
}

static void script_errors(Peer *peer)
{
    g_autofree char *a = NULL, *b = NULL, *c = NULL;

    peer_handshake(peer);
    a = peer_expect(peer, "no-such");
    peer_sendf(peer, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
               "\"The command no-such has not been found\"}, "
               "\"id\": \"%s\"}\r\n", a);
    b = peer_expect(peer, "fails");
    peer_sendf(peer, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
               "\"it failed\"}, \"id\": \"%s\"}\r\n", b);
    /* An error of the wrong types is still an error, and no crash */
    c = peer_expect(peer, "odd");
    peer_sendf(peer, "{\"error\": {\"class\": 3, \"desc\": [1]}, "
               "\"id\": \"%s\"}\r\n", c);
    peer_wait_closed(peer);
}

static void test_errors(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_errors, NULL);
    g_auto(Outcome) o = { 0 }, a = { 0 }, b = { 0 }, c = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);

    g_assert_true(o.ok);
    execute(client, "no-such", 5000, &a);
    spin_until(&a.done);
    g_assert_error(a.error, QMP_CLIENT_ERROR,
                   QMP_CLIENT_ERROR_COMMAND_NOT_FOUND);
    execute(client, "fails", 5000, &b);
    spin_until(&b.done);
    g_assert_error(b.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_COMMAND);
    g_assert_cmpstr(b.error->message, ==, "it failed");
    execute(client, "odd", 5000, &c);
    spin_until(&c.done);
    g_assert_error(c.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_COMMAND);
    qmp_client_close(client);
}

/* Reads the command and never answers. */
static void script_silent(Peer *peer)
{
    g_autofree char *id = NULL;

    peer_handshake(peer);
    id = peer_expect(peer, "slow");
    peer_wait_closed(peer);
}

static void test_timeout(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_silent, NULL);
    g_auto(Outcome) o = { 0 }, a = { 0 }, b = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);
    gint64 start;

    g_assert_true(o.ok);
    start = g_get_monotonic_time();
    execute(client, "slow", 200, &a);
    spin_until(&a.done);
    g_assert_error(a.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_TIMEOUT);
    g_assert_nonnull(strstr(a.error->message, "slow"));
    g_assert_cmpint(g_get_monotonic_time() - start, >=, 200 * 1000);
    /* A late answer could be taken for the next one's: the client closed */
    execute(client, "next", 5000, &b);
    spin_until(&b.done);
    g_assert_error(b.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_CLOSED);
}

/* Accepts and says nothing. */
static void script_mute(Peer *peer)
{
    peer_wait_closed(peer);
}

static void test_connect_timeout(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_mute, NULL);
    g_auto(Outcome) o = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 200, &o);

    g_assert_error(o.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_TIMEOUT);
    g_assert_nonnull(strstr(o.error->message, "greeting"));
    g_assert_null(qmp_client_get_qemu_version(client));
}

/* Half an answer, then gone. */
static void script_dies_mid_answer(Peer *peer)
{
    g_autofree char *id = NULL;

    peer_handshake(peer);
    id = peer_expect(peer, "query");
    peer_sendf(peer, "{\"return\": {\"name\": \"partial");
}

static void test_closed_mid_answer(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_dies_mid_answer,
                                                 NULL);
    g_auto(Outcome) o = { 0 }, a = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);

    g_assert_true(o.ok);
    execute(client, "query", 5000, &a);
    spin_until(&a.done);
    g_assert_error(a.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_CLOSED);
    g_assert_nonnull(strstr(a.error->message, "closed by the peer"));
}

/* Sends the test's text as the greeting, then serves as QEMU would. */
static void script_greeting(Peer *peer)
{
    g_autofree char *id = NULL;

    peer_send(peer, peer->data);
    id = peer_expect(peer, "qmp_capabilities");
    peer_sendf(peer, "{\"return\": {}, \"id\": \"%s\"}\r\n", id);
    peer_wait_closed(peer);
}

static void script_greeting_refused(Peer *peer)
{
    peer_send(peer, peer->data);
    peer_wait_closed(peer);
}

static void test_bad_greetings(void)
{
    /* Not QMP: the client says so */
    static const char *const refused[] = {
        "{\"return\": {}}\r\n",
        "{\"QMP\": 1}\r\n",
        "hello\r\n",
        "[1, 2]\r\n",
        "{\"event\": \"X\"}\r\n",
    };
    /* QMP with an odd version: connects, the version unknown, no critical
     * (g_test_init() made criticals fatal) */
    static const char *const odd[] = {
        "{\"QMP\": {\"version\": 5, \"capabilities\": []}}\r\n",
        "{\"QMP\": {\"version\": {\"qemu\": [1]}}}\r\n",
        "{\"QMP\": {\"version\": {\"qemu\": {\"major\": \"ten\"}}}}\r\n",
        "{\"QMP\": {\"version\": {\"qemu\": {\"major\": {}}}}}\r\n",
    };
    guint i;

    for (i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_autoptr(FakeMonitor) fm =
            fake_monitor_new(script_greeting_refused, (gpointer)refused[i]);
        g_auto(Outcome) o = { 0 };
        g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);

        g_test_message("greeting %s", refused[i]);
        g_assert_error(o.error, QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_PROTOCOL);
        g_assert_null(qmp_client_get_qemu_version(client));
    }
    for (i = 0; i < G_N_ELEMENTS(odd); i++) {
        g_autoptr(FakeMonitor) fm = fake_monitor_new(script_greeting,
                                                     (gpointer)odd[i]);
        g_auto(Outcome) o = { 0 };
        g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);
        const char *v;

        g_test_message("greeting %s", odd[i]);
        g_assert_no_error(o.error);
        v = qmp_client_get_qemu_version(client);
        g_assert_true(v == NULL || g_str_equal(v, "0.0.0"));
        qmp_client_close(client);
    }
}

/*
 * A cancelled request fails at once; QEMU's answer comes later and is
 * dropped; the connection goes on serving the next request.
 */
static void script_late_answer(Peer *peer)
{
    g_autofree char *a = NULL, *b = NULL;

    peer_handshake(peer);
    a = peer_expect(peer, "slow");
    peer_wait_go(peer);
    peer_sendf(peer, "{\"return\": {\"name\": \"slow\"}, \"id\": \"%s\"}\r\n",
               a);
    b = peer_expect(peer, "next");
    peer_sendf(peer, "{\"return\": {\"name\": \"next\"}, \"id\": \"%s\"}\r\n",
               b);
    peer_wait_closed(peer);
}

static void test_cancel(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_late_answer, NULL);
    g_autoptr(GCancellable) cancel = g_cancellable_new();
    g_auto(Outcome) o = { 0 }, a = { 0 }, b = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);

    g_assert_true(o.ok);
    qmp_client_execute_async(client, "slow", NULL, 0, cancel, on_executed,
                             &a);
    spin_until_received(&fm->peer, 2);
    g_cancellable_cancel(cancel);
    spin_until(&a.done);
    g_assert_error(a.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    fake_monitor_go(fm);
    execute(client, "next", 5000, &b);
    spin_until(&b.done);
    g_assert_cmpstr(returned_name(&b), ==, "next");
    qmp_client_close(client);
}

static void test_cancel_connect(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_mute, NULL);
    g_autoptr(GCancellable) cancel = g_cancellable_new();
    g_autoptr(QmpClient) client = qmp_client_new(fm->path);
    g_auto(Outcome) o = { 0 };

    qmp_client_connect_async(client, 0, cancel, on_connected, &o);
    spin_until_received(&fm->peer, 0);
    g_cancellable_cancel(cancel);
    spin_until(&o.done);
    g_assert_error(o.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

#define MANY 2000

/* Answers MANY queries, each with the id it was sent. */
static void script_many(Peer *peer)
{
    int i;

    peer_handshake(peer);
    for (i = 0; i < MANY; i++) {
        g_autofree char *id = peer_expect(peer, "query");

        peer_sendf(peer, "{\"return\": {\"name\": \"%d\"}, \"id\": \"%s\"}"
                   "\r\n", i, id);
    }
    peer_wait_closed(peer);
}

/*
 * Many requests on one connection, as the exporter makes over its life:
 * under valgrind, nothing of them may stay behind.
 */
static void test_many(void)
{
    g_autoptr(FakeMonitor) fm = fake_monitor_new(script_many, NULL);
    g_auto(Outcome) o = { 0 };
    g_autoptr(QmpClient) client = connect_to(fm, 5000, &o);
    int i;

    g_assert_true(o.ok);
    for (i = 0; i < MANY; i++) {
        g_auto(Outcome) a = { 0 };
        g_autofree char *want = g_strdup_printf("%d", i);

        execute(client, "query", 5000, &a);
        spin_until(&a.done);
        g_assert_cmpstr(returned_name(&a), ==, want);
    }
    qmp_client_close(client);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp-client/connect", test_connect);
    g_test_add_func("/qmp-client/connect-no-timeout",
                    test_connect_no_timeout);
    g_test_add_func("/qmp-client/ids", test_ids);
    g_test_add_func("/qmp-client/errors", test_errors);
    g_test_add_func("/qmp-client/timeout", test_timeout);
    g_test_add_func("/qmp-client/connect-timeout", test_connect_timeout);
    g_test_add_func("/qmp-client/closed-mid-answer", test_closed_mid_answer);
    g_test_add_func("/qmp-client/bad-greetings", test_bad_greetings);
    g_test_add_func("/qmp-client/cancel", test_cancel);
    g_test_add_func("/qmp-client/cancel-connect", test_cancel_connect);
    g_test_add_func("/qmp-client/many", test_many);
    return g_test_run();
}
