/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Splits a QMP byte stream into JSON objects (see qmp-parser.h).
 */
#include "qmp-parser.h"

G_DEFINE_QUARK(qmp-parser-error-quark, qmp_parser_error)

struct QmpParser {
    GString *buf;       /* the message being read */
    gsize max_size;
    int depth;          /* nesting of {} and [] outside strings */
    gboolean in_string;
    gboolean escape;    /* the previous byte in a string was a backslash */
    gboolean failed;
};

QmpParser *qmp_parser_new(gsize max_size)
{
    QmpParser *parser = g_new0(QmpParser, 1);

    parser->buf = g_string_sized_new(4096);
    parser->max_size = max_size ? max_size : QMP_PARSER_DEFAULT_MAX_SIZE;
    return parser;
}

void qmp_parser_free(QmpParser *parser)
{
    if (parser) {
        g_string_free(parser->buf, TRUE);
        g_free(parser);
    }
}

gsize qmp_parser_pending(QmpParser *parser)
{
    return parser->buf->len;
}

static gboolean emit_message(QmpParser *parser, QmpParserMessageFunc func,
                             gpointer user_data, GError **error)
{
    g_autoptr(JsonParser) json = json_parser_new_immutable();
    g_autoptr(GError) local_err = NULL;
    JsonNode *root;

    if (memchr(parser->buf->str, '\0', parser->buf->len)) {
        g_set_error(error, QMP_PARSER_ERROR, QMP_PARSER_ERROR_INVALID,
                    "invalid JSON: a NUL byte inside a message");
        return FALSE;
    }
    if (!json_parser_load_from_data(json, parser->buf->str, parser->buf->len,
                                    &local_err)) {
        g_set_error(error, QMP_PARSER_ERROR, QMP_PARSER_ERROR_INVALID,
                    "invalid JSON: %s", local_err->message);
        return FALSE;
    }
    root = json_parser_get_root(json);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(error, QMP_PARSER_ERROR, QMP_PARSER_ERROR_INVALID,
                    "invalid JSON: a message that is not an object");
        return FALSE;
    }
    g_string_truncate(parser->buf, 0);
    if (func) {
        func(json_node_get_object(root), user_data);
    }
    return TRUE;
}

static gboolean fail(QmpParser *parser, GError **error, int code,
                     const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static gboolean fail(QmpParser *parser, GError **error, int code,
                     const char *fmt, ...)
{
    va_list ap;

    parser->failed = TRUE;
    va_start(ap, fmt);
    if (error) {
        *error = g_error_new_valist(QMP_PARSER_ERROR, code, fmt, ap);
    }
    va_end(ap);
    return FALSE;
}

gboolean qmp_parser_feed(QmpParser *parser, const char *data, gsize len,
                         QmpParserMessageFunc func, gpointer user_data,
                         GError **error)
{
    gsize i, start = 0;

    if (parser->failed) {
        g_set_error_literal(error, QMP_PARSER_ERROR, QMP_PARSER_ERROR_GARBAGE,
                            "the stream was already out of sync");
        return FALSE;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = data[i];

        if (parser->depth == 0) {
            /* Between messages: whitespace only, then an object */
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                continue;
            }
            if (c != '{') {
                return fail(parser, error, QMP_PARSER_ERROR_GARBAGE,
                            "not JSON: byte 0x%02x where a message should "
                            "start", c);
            }
            start = i;
            parser->depth = 1;
            continue;
        }
        if (parser->in_string) {
            if (parser->escape) {
                parser->escape = FALSE;
            } else if (c == '\\') {
                parser->escape = TRUE;
            } else if (c == '"') {
                parser->in_string = FALSE;
            }
        } else if (c == '"') {
            parser->in_string = TRUE;
        } else if (c == '{' || c == '[') {
            if (++parser->depth > QMP_PARSER_MAX_DEPTH) {
                return fail(parser, error, QMP_PARSER_ERROR_TOO_DEEP,
                            "a message nested deeper than %d levels",
                            QMP_PARSER_MAX_DEPTH);
            }
        } else if (c == '}' || c == ']') {
            parser->depth--;
        }
        if (parser->buf->len + (i - start + 1) > parser->max_size) {
            return fail(parser, error, QMP_PARSER_ERROR_TOO_LARGE,
                        "a message larger than %" G_GSIZE_FORMAT " bytes",
                        parser->max_size);
        }
        if (parser->depth == 0) {
            g_string_append_len(parser->buf, data + start, i - start + 1);
            if (!emit_message(parser, func, user_data, error)) {
                parser->failed = TRUE;
                return FALSE;
            }
        }
    }
    if (parser->depth > 0) {
        /* Keep the incomplete message for the next read */
        g_string_append_len(parser->buf, data + start, len - start);
    }
    return TRUE;
}
