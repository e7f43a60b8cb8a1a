/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the QMP stream parser: whatever a peer sends, in
 * whatever pieces, the parser neither crashes nor buffers past its limit,
 * and the messages it returns do not depend on how the input was split.
 */
#include <stdint.h>

#include "qmp-parser.h"

#define FUZZ_MAX_SIZE 4096

static void count(JsonObject *msg, gpointer data)
{
    (*(guint *)data)++;
    /* Touch the message: a bad object would trip ASan here */
    json_object_get_size(msg);
}

static guint parse(const uint8_t *data, size_t size, size_t chunk,
                   gboolean *ok)
{
    g_autoptr(QmpParser) p = qmp_parser_new(FUZZ_MAX_SIZE);
    guint n = 0;
    size_t i;

    *ok = TRUE;
    for (i = 0; i < size && *ok; i += chunk) {
        *ok = qmp_parser_feed(p, (const char *)data + i,
                              MIN(chunk, size - i), count, &n, NULL);
        g_assert(qmp_parser_pending(p) <= FUZZ_MAX_SIZE);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gboolean ok_whole, ok_split;
    guint whole, split;

    if (size == 0) {
        return 0;
    }
    whole = parse(data, size, size, &ok_whole);
    /* The first byte picks a read size for the second pass */
    split = parse(data + 1, size - 1, (data[0] % 16) + 1, &ok_split);
    (void)split;
    if (size > 1) {
        gboolean ok;
        guint again = parse(data + 1, size - 1, size - 1, &ok);

        g_assert(again == split);
        g_assert(ok == ok_split);
    }
    (void)whole;
    (void)ok_whole;
    return 0;
}
