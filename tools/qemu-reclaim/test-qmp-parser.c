/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QMP stream parser: messages split and joined at every byte, and
 * every kind of broken input refused with the right error.
 */
#include "qmp-parser.h"

typedef struct {
    GPtrArray *messages;    /* of char *, each message re-serialized */
} Collected;

static void collect(JsonObject *msg, gpointer data)
{
    Collected *c = data;
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);

    json_node_set_object(node, msg);
    g_ptr_array_add(c->messages, json_to_string(node, FALSE));
}

static const char stream[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, "
    "\"major\": 10}}, \"capabilities\": []}}\r\n"
    "{\"return\": {}, \"id\": \"qr-1\"}\r\n"
    "{\"event\": \"X\", \"data\": {\"s\": \"a } ] \\\" { [ b\"}}\n"
    "  {\n  \"return\": [1, [2, {\"x\": \"\\\\\"}]],\n  \"id\": \"qr-2\"\n}\n";

/* The same four messages whatever the read sizes. */
static void test_split_anywhere(void)
{
    gsize chunk, i;

    for (chunk = 1; chunk <= sizeof(stream); chunk++) {
        g_autoptr(QmpParser) p = qmp_parser_new(0);
        Collected c = { g_ptr_array_new_with_free_func(g_free) };

        for (i = 0; i < sizeof(stream) - 1; i += chunk) {
            g_assert_true(qmp_parser_feed(p, stream + i,
                                          MIN(chunk, sizeof(stream) - 1 - i),
                                          collect, &c, NULL));
        }
        g_assert_cmpuint(c.messages->len, ==, 4);
        g_assert_cmpstr(c.messages->pdata[1], ==,
                        "{\"return\":{},\"id\":\"qr-1\"}");
        g_assert_cmpstr(c.messages->pdata[2], ==,
                        "{\"event\":\"X\",\"data\":{\"s\":\"a } ] \\\" { [ "
                        "b\"}}");
        g_assert_cmpstr(c.messages->pdata[3], ==,
                        "{\"return\":[1,[2,{\"x\":\"\\\\\"}]],\"id\":\"qr-2\"}");
        g_assert_cmpuint(qmp_parser_pending(p), ==, 0);
        g_ptr_array_unref(c.messages);
    }
}

static void expect_error(const char *input, gsize len, gsize max,
                         int code)
{
    g_autoptr(QmpParser) p = qmp_parser_new(max);
    g_autoptr(GError) err = NULL;

    g_assert_false(qmp_parser_feed(p, input, len, NULL, NULL, &err));
    g_assert_error(err, QMP_PARSER_ERROR, code);
    g_clear_error(&err);
    /* Once out of sync, always refused: nothing after it is trusted */
    g_assert_false(qmp_parser_feed(p, "{}", 2, NULL, NULL, &err));
    g_assert_nonnull(err);
}

static void test_garbage(void)
{
    expect_error("hello\n", 6, 0, QMP_PARSER_ERROR_GARBAGE);
    expect_error("{}]", 3, 0, QMP_PARSER_ERROR_GARBAGE);
    expect_error("[1]", 3, 0, QMP_PARSER_ERROR_GARBAGE);
}

static void test_invalid(void)
{
    expect_error("{\"a\": }", 7, 0, QMP_PARSER_ERROR_INVALID);
    expect_error("{\"a\": [1}]}", 11, 0, QMP_PARSER_ERROR_INVALID);
    expect_error("{\"a\": \"x\0y\"}", 12, 0, QMP_PARSER_ERROR_INVALID);
}

static void test_too_large(void)
{
    g_autoptr(QmpParser) p = qmp_parser_new(1000);
    g_autoptr(GError) err = NULL;
    g_autofree char *big = g_strnfill(600, 'x');
    gsize n = 0;

    /* An endless string: refused once past the limit, not at its end */
    g_assert_true(qmp_parser_feed(p, "{\"a\": \"", 7, NULL, NULL, &err));
    while (qmp_parser_feed(p, big, 600, NULL, NULL, &err)) {
        n++;
        g_assert_cmpuint(qmp_parser_pending(p), <=, 1000);
    }
    g_assert_error(err, QMP_PARSER_ERROR, QMP_PARSER_ERROR_TOO_LARGE);
    g_assert_cmpuint(n, ==, 1);
}

static void test_too_deep(void)
{
    g_autofree char *deep = g_strnfill(QMP_PARSER_MAX_DEPTH + 1, '[');

    deep[0] = '{';
    expect_error(deep, strlen(deep), 0, QMP_PARSER_ERROR_TOO_DEEP);
}

static void test_not_object(void)
{
    /* Valid JSON inside braces is an object by construction; a bare
     * value at top level is garbage */
    expect_error("42", 2, 0, QMP_PARSER_ERROR_GARBAGE);
    expect_error("\"s\"", 3, 0, QMP_PARSER_ERROR_GARBAGE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp-parser/split-anywhere", test_split_anywhere);
    g_test_add_func("/qmp-parser/garbage", test_garbage);
    g_test_add_func("/qmp-parser/invalid", test_invalid);
    g_test_add_func("/qmp-parser/too-large", test_too_large);
    g_test_add_func("/qmp-parser/too-deep", test_too_deep);
    g_test_add_func("/qmp-parser/not-object", test_not_object);
    return g_test_run();
}
