/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Sizes and durations as operators write and read them. */
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

/* Most decimals a size takes: 10^6 < 2^20, so a fraction shifted by up to
 * 40 bits stays within 64 bits, and a millionth of a TiB is about 1 MiB. */
#define MAX_DECIMALS 6

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
    g_autofree char *whole = NULL;
    const char *end;
    guint64 w, frac = 0, scale = 1;
    size_t n_whole, n_frac = 0;
    guint i;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    /*
     * Digits and one decimal point only: no sign, hex or exponent.  The
     * value is computed in integers: a double would round sizes above 2^53
     * and let 2^63 through as a "size" that does not fit a QMP int.
     */
    n_whole = strspn(p, "0123456789");
    end = p + n_whole;
    if (*end == '.') {
        n_frac = strspn(end + 1, "0123456789");
        end += 1 + n_frac;
    }
    whole = g_strndup(p, n_whole);
    if (!n_whole ||
        !g_ascii_string_to_unsigned(whole, 10, 0, G_MAXINT64, &w, NULL)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    n_whole > 0 ? "size '%s' is too large" :
                    "'%s' is not a size (examples: 4096, 64M, 1.5G)", text);
        return FALSE;
    }
    if (n_frac > MAX_DECIMALS) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "'%s': at most %d decimals", text, MAX_DECIMALS);
        return FALSE;
    }
    for (i = 0; i < n_frac; i++) {
        frac = frac * 10 + (p[n_whole + 1 + i] - '0');
        scale *= 10;
    }
    while (g_ascii_isspace(*end)) {
        end++;
    }
    for (i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        int shift = suffixes[i].shift;

        if (g_ascii_strcasecmp(end, suffixes[i].suffix)) {
            continue;
        }
        /*
         * QMP sizes are signed 64-bit integers: at most 2^63 - 1.  With w
         * at most (2^63 - 1) >> shift, w << shift is at most 2^63 - 2^shift,
         * and the fraction adds less than 2^shift: the sum fits.
         */
        if (w > (guint64)G_MAXINT64 >> shift) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "size '%s' is too large", text);
            return FALSE;
        }
        *bytes = (w << shift) + (frac << shift) / scale;
        return TRUE;
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
