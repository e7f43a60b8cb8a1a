/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * An asynchronous QMP client on the GLib main loop.
 *
 * One QmpClient is one connection to one QEMU: connect (Unix socket or
 * TCP), read the greeting, negotiate capabilities, then run commands with
 * ids and per-request timeouts while events are handed to a callback.
 * Nothing blocks: many clients are served at once by one main loop.  Any
 * failure (timeout, closed connection, garbage) closes the connection and
 * fails every pending request with a message that says what happened.
 */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define QMP_CLIENT_ERROR (qmp_client_error_quark())
GQuark qmp_client_error_quark(void);

typedef enum {
    QMP_CLIENT_ERROR_CONNECT,           /* could not connect */
    QMP_CLIENT_ERROR_TIMEOUT,           /* no answer in time */
    QMP_CLIENT_ERROR_CLOSED,            /* the peer closed the connection */
    QMP_CLIENT_ERROR_PROTOCOL,          /* the peer does not speak QMP */
    QMP_CLIENT_ERROR_COMMAND_NOT_FOUND, /* QEMU has no such command */
    QMP_CLIENT_ERROR_COMMAND,           /* QEMU answered with an error */
} QmpClientError;

#define QMP_TYPE_CLIENT (qmp_client_get_type())
G_DECLARE_FINAL_TYPE(QmpClient, qmp_client, QMP, CLIENT, GObject)

/* Called for every event; @event is borrowed. */
typedef void (*QmpEventFunc)(QmpClient *client, JsonObject *event,
                             gpointer user_data);

/*
 * @address: a socket path, "unix:PATH" or "tcp:HOST:PORT".
 */
QmpClient *qmp_client_new(const char *address);
const char *qmp_client_get_address(QmpClient *client);

void qmp_client_set_event_func(QmpClient *client, QmpEventFunc func,
                               gpointer user_data);
/* Largest message accepted from the peer (default 1 MiB). */
void qmp_client_set_max_message_size(QmpClient *client, gsize max);

/*
 * Connect, read the greeting, negotiate; within @timeout_ms in all.
 * Cancelling @cancellable closes the client; the call fails with
 * G_IO_ERROR_CANCELLED.
 */
void qmp_client_connect_async(QmpClient *client, guint timeout_ms,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data);
gboolean qmp_client_connect_finish(QmpClient *client, GAsyncResult *result,
                                   GError **error);

/*
 * Run @command with @args (may be NULL; a reference is taken).  The
 * result is the "return" member, or an error.  @timeout_ms 0: no limit.
 * A request that times out closes the connection: an answer that comes
 * late could not be told from the next one's otherwise.
 * Cancelling @cancellable fails the call with G_IO_ERROR_CANCELLED at
 * once and keeps the connection: QEMU still runs the command, and its
 * answer, which carries the request's id, is dropped when it comes.
 */
void qmp_client_execute_async(QmpClient *client, const char *command,
                              JsonObject *args, guint timeout_ms,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data);
JsonNode *qmp_client_execute_finish(QmpClient *client, GAsyncResult *result,
                                    GError **error);

/* The process at the other end of a Unix socket, or 0 if unknown. */
GPid qmp_client_get_peer_pid(QmpClient *client);
/* "10.2.2" from the greeting, or NULL before it. */
const char *qmp_client_get_qemu_version(QmpClient *client);

/* Close now; pending requests fail with QMP_CLIENT_ERROR_CLOSED. */
void qmp_client_close(QmpClient *client);

G_END_DECLS
