/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Sizes and durations as operators write and read them. */
#pragma once

#include <glib.h>

/* "120.0 MiB": binary units, one decimal; bytes below 1 KiB. */
char *units_format_size(guint64 bytes);

/* "25 ms", "1.2 s", "350 us". */
char *units_format_duration_us(guint64 us);

/*
 * Parse "4096", "64K", "64M", "64MiB", "1G", "1.5G", "2T" (binary units,
 * case-insensitive; "B" alone allowed).  Refuses negatives, junk and
 * values above 2^63 - 1 with a message that quotes @text.
 */
gboolean units_parse_size(const char *text, guint64 *bytes, GError **error);

/* A whole number in [@min, @max], with a message naming @what. */
gboolean units_parse_uint(const char *text, guint64 min, guint64 max,
                          const char *what, guint64 *value, GError **error);
