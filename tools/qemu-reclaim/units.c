/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Sizes and durations as operators write and read them. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "units.h"

char *units_format_size(guint64 bytes)
{
    static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = bytes;
    int i = -1;

    if (bytes < 1024) {
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
    }
    while (v >= 1024 && i < (int)G_N_ELEMENTS(unit) - 1) {
        v /= 1024;
        i++;
    }
    return g_strdup_printf("%.1f %s", v, unit[i]);
}

char *units_format_duration_us(guint64 us)
{
    if (us < 1000) {
        return g_strdup_printf("%" G_GUINT64_FORMAT " us", us);
    }
    if (us < 10 * 1000 * 1000) {
        return g_strdup_printf("%" G_GUINT64_FORMAT " ms", (us + 500) / 1000);
    }
    return g_strdup_printf("%.1f s", us / 1e6);
}

gboolean units_parse_size(const char *text, guint64 *bytes, GError **error)
{
    static const struct {
        const char *suffix;
        int shift;
    } suffixes[] = {
        { "", 0 }, { "b", 0 },
        { "k", 10 }, { "kb", 10 }, { "kib", 10 },
        { "m", 20 }, { "mb", 20 }, { "mib", 20 },
        { "g", 30 }, { "gb", 30 }, { "gib", 30 },
        { "t", 40 }, { "tb", 40 }, { "tib", 40 },
    };
    const char *p = text;
    char *end;
    double v;
    guint i;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (!g_ascii_isdigit(*p)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "'%s' is not a size (examples: 4096, 64M, 1.5G)", text);
        return FALSE;
    }
    /* Digits and one decimal point only: no hex, no exponent */
    end = (char *)p + strspn(p, "0123456789");
    if (*end == '.') {
        end += 1 + strspn(end + 1, "0123456789");
    }
    {
        g_autofree char *number = g_strndup(p, end - p);

        errno = 0;
        v = g_ascii_strtod(number, NULL);
    }
    if (errno || !isfinite(v)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "'%s' is not a size (examples: 4096, 64M, 1.5G)", text);
        return FALSE;
    }
    while (g_ascii_isspace(*end)) {
        end++;
    }
    for (i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        if (!g_ascii_strcasecmp(end, suffixes[i].suffix)) {
            double b = ldexp(v, suffixes[i].shift);

            if (b > (double)G_MAXINT64) {
                g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "size '%s' is too large", text);
                return FALSE;
            }
            *bytes = (guint64)b;
            return TRUE;
        }
    }
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "'%s': unknown unit '%s' (use K, M, G or T)", text, end);
    return FALSE;
}

gboolean units_parse_uint(const char *text, guint64 min, guint64 max,
                          const char *what, guint64 *value, GError **error)
{
    guint64 v;

    if (!g_ascii_string_to_unsigned(text, 10, min, max, &v, NULL)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s must be a whole number from %" G_GUINT64_FORMAT
                    " to %" G_GUINT64_FORMAT ", not '%s'", what, min, max,
                    text);
        return FALSE;
    }
    *value = v;
    return TRUE;
}
