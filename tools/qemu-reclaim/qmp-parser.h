/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Splits a QMP byte stream into JSON objects.
 *
 * QEMU writes one JSON object per line, but a peer may pretty-print, send
 * several objects in one read, or split one object over many reads; and a
 * broken or hostile peer may send anything.  The parser finds the end of
 * each top-level object by tracking nesting outside strings, so it never
 * depends on newlines, and it refuses an object larger than a limit before
 * it has buffered more than that limit.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#define QMP_PARSER_ERROR (qmp_parser_error_quark())
GQuark qmp_parser_error_quark(void);

typedef enum {
    QMP_PARSER_ERROR_GARBAGE,   /* bytes outside any object */
    QMP_PARSER_ERROR_TOO_LARGE, /* an object above the size limit */
    QMP_PARSER_ERROR_TOO_DEEP,  /* nesting above the depth limit */
    QMP_PARSER_ERROR_INVALID,   /* an object that is not valid JSON */
} QmpParserError;

/* Default limits: QMP answers of the commands we use are a few KiB. */
#define QMP_PARSER_DEFAULT_MAX_SIZE (1024 * 1024)
#define QMP_PARSER_MAX_DEPTH 64

typedef struct QmpParser QmpParser;

/* Called with each complete message; @msg is borrowed. */
typedef void (*QmpParserMessageFunc)(JsonObject *msg, gpointer user_data);

QmpParser *qmp_parser_new(gsize max_size);
void qmp_parser_free(QmpParser *parser);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpParser, qmp_parser_free)

/*
 * Feed @len bytes.  Calls @func for every message completed by them.
 * Returns FALSE on the first error: the stream cannot be trusted after it,
 * and the parser refuses further input.
 */
gboolean qmp_parser_feed(QmpParser *parser, const char *data, gsize len,
                         QmpParserMessageFunc func, gpointer user_data,
                         GError **error);

/* Bytes of an incomplete message held now. */
gsize qmp_parser_pending(QmpParser *parser);
