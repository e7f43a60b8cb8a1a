/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * An asynchronous QMP client on the GLib main loop (see qmp-client.h).
 */
#include "qmp-client.h"
#include "qmp-parser.h"

G_DEFINE_QUARK(qmp-client-error-quark, qmp_client_error)

#define READ_CHUNK 65536

typedef enum {
    STATE_NEW,
    STATE_CONNECTING,
    STATE_GREETING,
    STATE_NEGOTIATING,
    STATE_READY,
    STATE_CLOSED,
} ClientState;

static const char *const state_doing[] = {
    [STATE_NEW] = "before connecting",
    [STATE_CONNECTING] = "connecting",
    [STATE_GREETING] = "waiting for the QMP greeting",
    [STATE_NEGOTIATING] = "negotiating capabilities",
    [STATE_READY] = "waiting for an answer",
    [STATE_CLOSED] = "after closing",
};

struct _QmpClient {
    GObject parent;

    char *address;
    ClientState state;
    GSocketConnection *conn;
    GCancellable *io_cancel;    /* cancels reads and writes on close */
    QmpParser *parser;
    gsize max_message;
    guint8 *readbuf;

    GQueue write_queue;         /* GBytes waiting to be written */
    GBytes *writing;            /* the one being written */

    GHashTable *pending;        /* id -> GTask of execute_async */
    guint64 next_id;

    GTask *connect_task;
    guint connect_timer;
    GSource *connect_cancel;    /* watches the caller's GCancellable */

    GPid peer_pid;
    char *version;

    QmpEventFunc event_func;
    gpointer event_data;
};

G_DEFINE_TYPE(QmpClient, qmp_client, G_TYPE_OBJECT)

/*
 * Members of what the peer sent, read without trusting its types: json-glib
 * logs a critical (fatal under G_DEBUG=fatal-criticals) when asked for an
 * object or a string that is something else.
 */
static JsonObject *object_member(JsonObject *obj, const char *name)
{
    JsonNode *n = obj ? json_object_get_member(obj, name) : NULL;

    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static const char *string_member(JsonObject *obj, const char *name)
{
    JsonNode *n = obj ? json_object_get_member(obj, name) : NULL;

    return n && JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_STRING ?
        json_node_get_string(n) : NULL;
}

static gint64 int_member(JsonObject *obj, const char *name)
{
    JsonNode *n = obj ? json_object_get_member(obj, name) : NULL;

    return n && JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_INT64 ?
        json_node_get_int(n) : 0;
}

/* Attach to the thread-default context a source that calls @func once
 * @cancellable is cancelled: the callback runs from the main loop, never
 * inside g_cancellable_cancel(). */
static GSource *watch_cancellable(GCancellable *cancellable,
                                  GCancellableSourceFunc func, gpointer data)
{
    GSource *source;

    if (!cancellable) {
        return NULL;
    }
    source = g_cancellable_source_new(cancellable);
    g_source_set_callback(source, G_SOURCE_FUNC(func), data, NULL);
    g_source_attach(source, g_main_context_get_thread_default());
    return source;
}

static void unwatch(GSource **source)
{
    if (*source) {
        g_source_destroy(*source);
        g_clear_pointer(source, g_source_unref);
    }
}

/* One command in flight: the data of its GTask. */
typedef struct {
    char *id;
    char *command;
    guint timeout_ms;
    guint timer;
    GSource *cancel_source;     /* watches the caller's GCancellable */
} Request;

static void request_free(Request *req)
{
    if (req->timer) {
        g_source_remove(req->timer);
    }
    if (req->cancel_source) {
        g_source_destroy(req->cancel_source);
        g_source_unref(req->cancel_source);
    }
    g_free(req->id);
    g_free(req->command);
    g_free(req);
}

static void client_abort(QmpClient *client, GError *error);
static void start_read(QmpClient *client);

static void qmp_client_finalize(GObject *obj)
{
    QmpClient *client = QMP_CLIENT(obj);

    /* Every async operation holds a reference: nothing is pending here */
    g_assert(g_hash_table_size(client->pending) == 0);
    g_assert(!client->connect_task);
    g_assert(!client->connect_cancel);
    g_clear_object(&client->conn);
    g_clear_object(&client->io_cancel);
    qmp_parser_free(client->parser);
    g_queue_clear_full(&client->write_queue, (GDestroyNotify)g_bytes_unref);
    g_clear_pointer(&client->writing, g_bytes_unref);
    g_hash_table_destroy(client->pending);
    g_free(client->readbuf);
    g_free(client->address);
    g_free(client->version);
    G_OBJECT_CLASS(qmp_client_parent_class)->finalize(obj);
}

static void qmp_client_class_init(QmpClientClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = qmp_client_finalize;
}

static void qmp_client_init(QmpClient *client)
{
    client->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            g_object_unref);
    client->io_cancel = g_cancellable_new();
    client->max_message = QMP_PARSER_DEFAULT_MAX_SIZE;
    g_queue_init(&client->write_queue);
}

QmpClient *qmp_client_new(const char *address)
{
    QmpClient *client = g_object_new(QMP_TYPE_CLIENT, NULL);

    client->address = g_strdup(address);
    return client;
}

const char *qmp_client_get_address(QmpClient *client)
{
    return client->address;
}

void qmp_client_set_event_func(QmpClient *client, QmpEventFunc func,
                               gpointer user_data)
{
    client->event_func = func;
    client->event_data = user_data;
}

void qmp_client_set_max_message_size(QmpClient *client, gsize max)
{
    client->max_message = max;
}

GPid qmp_client_get_peer_pid(QmpClient *client)
{
    return client->peer_pid;
}

const char *qmp_client_get_qemu_version(QmpClient *client)
{
    return client->version;
}

/* EPIPE, ECONNRESET: the peer went away, however the kernel says it */
static gboolean peer_gone(const GError *err)
{
    return g_error_matches(err, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE) ||
        g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED);
}

static GError *closed_by_peer(QmpClient *client)
{
    return g_error_new(QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_CLOSED,
                       "connection closed by the peer while %s",
                       state_doing[client->state]);
}

/* ---- writing ---------------------------------------------------------- */

static void write_next(QmpClient *client);

static void on_written(GObject *source, GAsyncResult *res, gpointer data)
{
    g_autoptr(QmpClient) client = data;
    g_autoptr(GError) err = NULL;

    g_clear_pointer(&client->writing, g_bytes_unref);
    if (!g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL,
                                          &err)) {
        if (client->state == STATE_CLOSED) {
            return;
        }
        if (peer_gone(err)) {
            client_abort(client, closed_by_peer(client));
        } else {
            client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                             QMP_CLIENT_ERROR_CLOSED,
                                             "cannot send: %s",
                                             err->message));
        }
        return;
    }
    write_next(client);
}

static void write_next(QmpClient *client)
{
    GOutputStream *out;
    gsize size;
    gconstpointer buf;

    if (client->writing || client->state == STATE_CLOSED ||
        g_queue_is_empty(&client->write_queue)) {
        return;
    }
    client->writing = g_queue_pop_head(&client->write_queue);
    buf = g_bytes_get_data(client->writing, &size);
    out = g_io_stream_get_output_stream(G_IO_STREAM(client->conn));
    g_output_stream_write_all_async(out, buf, size, G_PRIORITY_DEFAULT,
                                    client->io_cancel, on_written,
                                    g_object_ref(client));
}

static void send_message(QmpClient *client, JsonObject *msg)
{
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    g_autofree char *text = NULL;
    GString *line;

    json_node_set_object(node, msg);
    text = json_to_string(node, FALSE);
    line = g_string_new(text);
    g_string_append_c(line, '\n');
    g_queue_push_tail(&client->write_queue, g_string_free_to_bytes(line));
    write_next(client);
}

/* ---- closing ---------------------------------------------------------- */

static void fail_task(GTask *task, const GError *error)
{
    g_task_return_error(task, g_error_copy(error));
}

/* Close the connection; every pending operation fails with @error. */
static void client_abort(QmpClient *client, GError *error)
{
    g_autoptr(GError) err = error;
    g_autoptr(GHashTable) pending = NULL;
    g_autoptr(GTask) connect_task = NULL;
    GHashTableIter iter;
    gpointer task;

    if (client->state == STATE_CLOSED) {
        return;
    }
    g_object_ref(client);
    client->state = STATE_CLOSED;
    g_cancellable_cancel(client->io_cancel);
    if (client->conn) {
        /*
         * Close the descriptor now: closing the stream would wait for the
         * cancelled read to come back, and the socket is not ours to keep.
         */
        g_socket_close(g_socket_connection_get_socket(client->conn), NULL);
    }
    if (client->connect_timer) {
        g_source_remove(client->connect_timer);
        client->connect_timer = 0;
    }
    unwatch(&client->connect_cancel);
    /* Take everything out first: callbacks may call back into us */
    connect_task = g_steal_pointer(&client->connect_task);
    pending = g_steal_pointer(&client->pending);
    client->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            g_object_unref);
    if (connect_task) {
        fail_task(connect_task, err);
    }
    g_hash_table_iter_init(&iter, pending);
    while (g_hash_table_iter_next(&iter, NULL, &task)) {
        fail_task(task, err);
    }
    g_object_unref(client);
}

void qmp_client_close(QmpClient *client)
{
    client_abort(client, g_error_new_literal(QMP_CLIENT_ERROR,
                                             QMP_CLIENT_ERROR_CLOSED,
                                             "connection closed by us"));
}

/* ---- requests --------------------------------------------------------- */

/* The request @id, taken out of the table (a reference for the caller), or
 * NULL if nothing waits for it. */
static GTask *take_pending(QmpClient *client, const char *id)
{
    gpointer key, task;

    if (!id || !g_hash_table_steal_extended(client->pending, id, &key,
                                            &task)) {
        return NULL;
    }
    g_free(key);
    return task;
}

static gboolean on_request_cancelled(GCancellable *cancellable,
                                     gpointer data)
{
    GTask *task = data;
    Request *req = g_task_get_task_data(task);
    QmpClient *client = g_task_get_source_object(task);
    g_autoptr(GTask) mine = take_pending(client, req->id);

    /* The answer may still come; with this id gone it is dropped */
    if (mine) {
        g_task_return_error_if_cancelled(mine);
    }
    return G_SOURCE_REMOVE;
}

static gboolean on_request_timeout(gpointer data)
{
    GTask *task = data;
    Request *req = g_task_get_task_data(task);
    QmpClient *client = g_task_get_source_object(task);

    req->timer = 0;
    client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                     QMP_CLIENT_ERROR_TIMEOUT,
                                     "no answer to %s within %u ms",
                                     req->command, req->timeout_ms));
    return G_SOURCE_REMOVE;
}

void qmp_client_execute_async(QmpClient *client, const char *command,
                              JsonObject *args, guint timeout_ms,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data)
{
    g_autoptr(GTask) task = g_task_new(client, cancellable, callback,
                                       user_data);
    g_autoptr(JsonObject) msg = json_object_new();
    Request *req = g_new0(Request, 1);

    g_task_set_source_tag(task, qmp_client_execute_async);
    req->id = g_strdup_printf("qr-%" G_GUINT64_FORMAT, ++client->next_id);
    req->command = g_strdup(command);
    req->timeout_ms = timeout_ms;
    g_task_set_task_data(task, req, (GDestroyNotify)request_free);

    if (g_task_return_error_if_cancelled(task)) {
        return;
    }
    if (client->state != STATE_READY && client->state != STATE_NEGOTIATING) {
        g_task_return_new_error(task, QMP_CLIENT_ERROR,
                                QMP_CLIENT_ERROR_CLOSED,
                                "cannot run %s: not connected", command);
        return;
    }
    json_object_set_string_member(msg, "execute", command);
    if (args) {
        json_object_set_object_member(msg, "arguments",
                                      json_object_ref(args));
    }
    json_object_set_string_member(msg, "id", req->id);
    if (timeout_ms) {
        /* The timer holds no reference: the table does, until it fires */
        req->timer = g_timeout_add(timeout_ms, on_request_timeout, task);
    }
    /* Neither source holds a reference: the table does, until either fires */
    req->cancel_source = watch_cancellable(cancellable, on_request_cancelled,
                                           task);
    g_hash_table_insert(client->pending, g_strdup(req->id),
                        g_object_ref(task));
    send_message(client, msg);
}

JsonNode *qmp_client_execute_finish(QmpClient *client, GAsyncResult *result,
                                    GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, client), NULL);
    return g_task_propagate_pointer(G_TASK(result), error);
}

static void answer_request(QmpClient *client, JsonObject *msg)
{
    g_autoptr(GTask) task = take_pending(client, string_member(msg, "id"));
    Request *req;

    if (!task) {
        /* Not ours, or cancelled: nothing waits for it */
        g_debug("%s: ignoring an answer without a known id",
                client->address);
        return;
    }
    req = g_task_get_task_data(task);
    if (req->timer) {
        g_source_remove(req->timer);
        req->timer = 0;
    }
    unwatch(&req->cancel_source);
    if (json_object_has_member(msg, "return")) {
        g_task_return_pointer(task,
                              json_node_copy(json_object_get_member(msg,
                                                                    "return")),
                              (GDestroyNotify)json_node_unref);
    } else {
        JsonObject *err = object_member(msg, "error");
        const char *cls = string_member(err, "class");
        const char *desc = string_member(err, "desc");

        g_task_return_new_error(task, QMP_CLIENT_ERROR,
                                !g_strcmp0(cls, "CommandNotFound") ?
                                QMP_CLIENT_ERROR_COMMAND_NOT_FOUND :
                                QMP_CLIENT_ERROR_COMMAND,
                                "%s", desc ? desc : "error without text");
    }
}

/* ---- connecting ------------------------------------------------------- */

static void on_negotiated(GObject *source, GAsyncResult *res, gpointer data)
{
    QmpClient *client = QMP_CLIENT(source);
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute_finish(client, res, &err);
    g_autoptr(GTask) task = NULL;

    if (!client->connect_task) {
        return;     /* aborted; the connect task has failed already */
    }
    task = g_steal_pointer(&client->connect_task);
    if (client->connect_timer) {
        g_source_remove(client->connect_timer);
        client->connect_timer = 0;
    }
    unwatch(&client->connect_cancel);
    if (!ret) {
        g_autoptr(GError) e = g_error_new(QMP_CLIENT_ERROR,
                                          QMP_CLIENT_ERROR_PROTOCOL,
                                          "qmp_capabilities refused: %s",
                                          err->message);
        g_task_return_error(task, g_error_copy(e));
        client_abort(client, g_steal_pointer(&e));
        return;
    }
    client->state = STATE_READY;
    g_task_return_boolean(task, TRUE);
}

static void on_greeting(QmpClient *client, JsonObject *msg)
{
    JsonObject *version = object_member(object_member(msg, "QMP"),
                                        "version");
    JsonObject *q = object_member(version, "qemu");

    /* The version is only shown to the user: a peer's odd one is no error */
    if (q) {
        client->version = g_strdup_printf(
            "%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT,
            int_member(q, "major"), int_member(q, "minor"),
            int_member(q, "micro"));
    }
    client->state = STATE_NEGOTIATING;
    qmp_client_execute_async(client, "qmp_capabilities", NULL, 0, NULL,
                             on_negotiated, NULL);
}

static gboolean is_object_member(JsonObject *msg, const char *name)
{
    return object_member(msg, name) != NULL;
}

/* Dispatch one message; may close the client. */
static void on_message(JsonObject *msg, gpointer data)
{
    QmpClient *client = data;

    if (client->state == STATE_CLOSED) {
        return;
    }
    if (client->state == STATE_GREETING) {
        if (!is_object_member(msg, "QMP")) {
            client_abort(client, g_error_new_literal(
                QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_PROTOCOL,
                "not a QMP server: its first message is not a greeting"));
            return;
        }
        on_greeting(client, msg);
    } else if (json_object_has_member(msg, "event")) {
        if (client->event_func) {
            client->event_func(client, msg, client->event_data);
        }
    } else if (json_object_has_member(msg, "return") ||
               is_object_member(msg, "error")) {
        answer_request(client, msg);
    } else {
        client_abort(client, g_error_new_literal(
            QMP_CLIENT_ERROR, QMP_CLIENT_ERROR_PROTOCOL,
            "not a QMP message: neither an answer nor an event"));
    }
}

static void on_read(GObject *source, GAsyncResult *res, gpointer data)
{
    g_autoptr(QmpClient) client = data;
    g_autoptr(GError) err = NULL;
    gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &err);

    if (client->state == STATE_CLOSED) {
        return;
    }
    if (n < 0 && peer_gone(err)) {
        client_abort(client, closed_by_peer(client));
        return;
    }
    if (n < 0) {
        client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                         QMP_CLIENT_ERROR_CLOSED,
                                         "connection lost while %s: %s",
                                         state_doing[client->state],
                                         err->message));
        return;
    }
    if (n == 0) {
        client_abort(client, closed_by_peer(client));
        return;
    }
    if (!qmp_parser_feed(client->parser, (const char *)client->readbuf, n,
                         on_message, client, &err)) {
        client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                         QMP_CLIENT_ERROR_PROTOCOL,
                                         "not a QMP peer: %s",
                                         err->message));
        return;
    }
    start_read(client);
}

static void start_read(QmpClient *client)
{
    GInputStream *in;

    if (client->state == STATE_CLOSED) {
        return;
    }
    in = g_io_stream_get_input_stream(G_IO_STREAM(client->conn));
    g_input_stream_read_async(in, client->readbuf, READ_CHUNK,
                              G_PRIORITY_DEFAULT, client->io_cancel,
                              on_read, g_object_ref(client));
}

static void read_peer_pid(QmpClient *client)
{
    GSocket *sock = g_socket_connection_get_socket(client->conn);
    g_autoptr(GCredentials) cred = NULL;

    if (g_socket_get_family(sock) != G_SOCKET_FAMILY_UNIX) {
        return;
    }
    cred = g_socket_get_credentials(sock, NULL);
    if (cred) {
        pid_t pid = g_credentials_get_unix_pid(cred, NULL);

        client->peer_pid = pid > 0 ? pid : 0;
    }
}

static void on_connected(GObject *source, GAsyncResult *res, gpointer data)
{
    g_autoptr(QmpClient) client = data;
    g_autoptr(GError) err = NULL;
    GSocketConnection *conn;

    conn = g_socket_client_connect_finish(G_SOCKET_CLIENT(source), res, &err);
    if (client->state == STATE_CLOSED) {
        g_clear_object(&conn);
        return;
    }
    if (!conn) {
        const char *why = err->message;

        /* GLib says "Could not connect: <reason>"; say it once */
        if (g_str_has_prefix(why, "Could not connect: ")) {
            why += strlen("Could not connect: ");
        }
        client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                         QMP_CLIENT_ERROR_CONNECT,
                                         "cannot connect: %s", why));
        return;
    }
    client->conn = conn;
    read_peer_pid(client);
    client->state = STATE_GREETING;
    client->parser = qmp_parser_new(client->max_message);
    client->readbuf = g_malloc(READ_CHUNK);
    start_read(client);
}

static gboolean on_connect_timeout(gpointer data)
{
    QmpClient *client = data;
    GTask *task = client->connect_task;
    guint timeout_ms = GPOINTER_TO_UINT(g_task_get_task_data(task));

    client->connect_timer = 0;
    client_abort(client, g_error_new(QMP_CLIENT_ERROR,
                                     QMP_CLIENT_ERROR_TIMEOUT,
                                     "timed out after %u ms %s",
                                     timeout_ms, state_doing[client->state]));
    return G_SOURCE_REMOVE;
}

static gboolean on_connect_cancelled(GCancellable *cancellable,
                                     gpointer data)
{
    QmpClient *client = data;

    g_clear_pointer(&client->connect_cancel, g_source_unref);
    client_abort(client, g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                             "connecting was cancelled"));
    return G_SOURCE_REMOVE;
}

static GSocketConnectable *parse_address(const char *address, GError **error)
{
    if (g_str_has_prefix(address, "tcp:")) {
        return g_network_address_parse(address + 4, 0, error);
    }
    if (g_str_has_prefix(address, "unix:")) {
        address += 5;
    }
    return G_SOCKET_CONNECTABLE(g_unix_socket_address_new(address));
}

void qmp_client_connect_async(QmpClient *client, guint timeout_ms,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data)
{
    g_autoptr(GTask) task = g_task_new(client, cancellable, callback,
                                       user_data);
    g_autoptr(GSocketClient) sc = NULL;
    g_autoptr(GSocketConnectable) addr = NULL;
    g_autoptr(GError) err = NULL;

    g_task_set_source_tag(task, qmp_client_connect_async);
    g_task_set_task_data(task, GUINT_TO_POINTER(timeout_ms), NULL);
    if (g_task_return_error_if_cancelled(task)) {
        return;
    }
    if (client->state != STATE_NEW) {
        g_task_return_new_error(task, QMP_CLIENT_ERROR,
                                QMP_CLIENT_ERROR_CONNECT,
                                "a client connects only once");
        return;
    }
    addr = parse_address(client->address, &err);
    if (!addr) {
        g_task_return_new_error(task, QMP_CLIENT_ERROR,
                                QMP_CLIENT_ERROR_CONNECT,
                                "bad address %s: %s", client->address,
                                err->message);
        return;
    }
    client->state = STATE_CONNECTING;
    client->connect_task = g_steal_pointer(&task);
    if (timeout_ms) {
        client->connect_timer = g_timeout_add(timeout_ms, on_connect_timeout,
                                              client);
    }
    client->connect_cancel = watch_cancellable(cancellable,
                                               on_connect_cancelled, client);
    sc = g_socket_client_new();
    g_socket_client_connect_async(sc, addr, client->io_cancel, on_connected,
                                  g_object_ref(client));
}

gboolean qmp_client_connect_finish(QmpClient *client, GAsyncResult *result,
                                   GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, client), FALSE);
    return g_task_propagate_boolean(G_TASK(result), error);
}
