/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sizes as operators type them, and as the tool prints them.
 */
#include "units.h"

static void test_parse(void)
{
    static const struct {
        const char *text;
        guint64 bytes;
    } good[] = {
        { "0", 0 }, { "4096", 4096 }, { "64K", 65536 }, { "64k", 65536 },
        { "64M", 64 << 20 }, { "64MiB", 64 << 20 }, { "64 MB", 64 << 20 },
        { "1G", 1ULL << 30 }, { "1.5G", 3ULL << 29 }, { "2T", 2ULL << 40 },
        { "7B", 7 },
        /* Exact in integers: doubles would round these */
        { "9007199254740993", 9007199254740993ULL },
        { "9223372036854775807", 9223372036854775807ULL },
        { "8388607T", 8388607ULL << 40 }, { "0.1K", 102 },
        { "1.000001T", (1ULL << 40) + (1ULL << 40) / 1000000 },
    };
    static const char *const bad[] = {
        "", "M", "-1", "12Q", "1.5.5G", "0x10", "9999999999T", "nan", "inf",
        "64 M B",
        /* 2^63 would reach QEMU as a negative size */
        "9223372036854775808", "8388608T", "8388608.0T", "18446744073709551616",
        "1.1234567G",
    };
    guint i;

    for (i = 0; i < G_N_ELEMENTS(good); i++) {
        guint64 v = 1;

        g_assert_true(units_parse_size(good[i].text, &v, NULL));
        g_assert_cmpuint(v, ==, good[i].bytes);
    }
    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;
        guint64 v = 1;

        g_assert_false(units_parse_size(bad[i], &v, &err));
        /* The message quotes what was typed */
        g_assert_nonnull(strstr(err->message, bad[i]));
        g_assert_cmpuint(v, ==, 1);
    }
}

static void test_format(void)
{
    static const struct {
        guint64 bytes;
        const char *text;
    } sizes[] = {
        { 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" },
        { 125829120, "120.0 MiB" }, { 3ULL << 29, "1.5 GiB" },
    };
    guint i;

    for (i = 0; i < G_N_ELEMENTS(sizes); i++) {
        g_autofree char *s = units_format_size(sizes[i].bytes);

        g_assert_cmpstr(s, ==, sizes[i].text);
    }
}

static void test_uint(void)
{
    g_autoptr(GError) err = NULL;
    guint64 v;

    g_assert_true(units_parse_uint("32", 1, 1024, "--jobs", &v, NULL));
    g_assert_cmpuint(v, ==, 32);
    g_assert_false(units_parse_uint("0", 1, 1024, "--jobs", &v, &err));
    g_assert_nonnull(strstr(err->message, "--jobs"));
    g_clear_error(&err);
    g_assert_false(units_parse_uint("-1", 1, 1024, "--jobs", &v, &err));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/units/parse", test_parse);
    g_test_add_func("/units/format", test_format);
    g_test_add_func("/units/uint", test_uint);
    return g_test_run();
}
