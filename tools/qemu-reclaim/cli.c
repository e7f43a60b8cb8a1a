/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the commands share (see cli.h).
 */
#include <stdarg.h>

#include "cli.h"
#include "units.h"

GPtrArray *cli_targets(CliCommon *common, GError **error)
{
    return targets_resolve((const char *const *)common->targets, error);
}

GPtrArray *cli_pass_targets(CliCommon *common)
{
    g_autoptr(GError) err = NULL;
    GPtrArray *targets = cli_targets(common, &err);

    if (!targets) {
        /* A host without VMs is not a failure of the daemon */
        g_debug("%s", err->message);
        targets = g_ptr_array_new();
    }
    return targets;
}

char *cli_sanitize(const char *text)
{
    g_autofree char *valid = g_utf8_make_valid(text, -1);
    GString *out = g_string_sized_new(strlen(valid));
    const char *p;

    for (p = valid; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);

        /* C0, DEL and C1: escapes, cursor moves, title changes... */
        if (c < 0x20 || (c >= 0x7f && c < 0xa0)) {
            g_string_append_printf(out, "\\x%02x", c);
        } else {
            g_string_append_len(out, p, g_utf8_next_char(p) - p);
        }
    }
    return g_string_free(out, FALSE);
}

static gboolean log_verbose;

static GLogWriterOutput log_writer(GLogLevelFlags level,
                                   const GLogField *fields, gsize n_fields,
                                   gpointer data)
{
    g_autoptr(GDateTime) now = NULL;
    g_autofree char *stamp = NULL;
    g_autofree char *text = NULL;
    const char *message = "";
    gsize i;

    if ((level & G_LOG_LEVEL_DEBUG) && !log_verbose) {
        return G_LOG_WRITER_HANDLED;
    }
    for (i = 0; i < n_fields; i++) {
        if (!strcmp(fields[i].key, "MESSAGE") && fields[i].length < 0) {
            message = fields[i].value;
        }
    }
    text = cli_sanitize(message);
    if (g_log_writer_is_journald(fileno(stderr))) {
        GLogField *copy = g_memdup2(fields, n_fields * sizeof(*fields));
        GLogWriterOutput ret;

        /* The journal stores the priority and the time itself */
        for (i = 0; i < n_fields; i++) {
            if (!strcmp(copy[i].key, "MESSAGE")) {
                copy[i].value = text;
                copy[i].length = -1;
            }
        }
        ret = g_log_writer_journald(level, copy, n_fields, data);
        g_free(copy);
        if (ret == G_LOG_WRITER_HANDLED) {
            return ret;
        }
    }
    now = g_date_time_new_now_local();
    stamp = g_date_time_format(now, "%F %T");
    fprintf(stderr, "%s %s%s\n", stamp,
            level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL |
                     G_LOG_LEVEL_WARNING) ? "warning: " : "", text);
    fflush(stderr);
    return G_LOG_WRITER_HANDLED;
}

void cli_log_init(gboolean verbose)
{
    log_verbose = verbose;
    g_log_set_writer_func(log_writer, NULL, NULL);
}

struct CliTable {
    GPtrArray *header;
    GPtrArray *rows;    /* of GPtrArray of char * */
    char *align;
};

CliTable *cli_table_new(const char *align, ...)
{
    CliTable *t = g_new0(CliTable, 1);
    const char *h;
    va_list ap;

    t->align = g_strdup(align);
    t->header = g_ptr_array_new_with_free_func(g_free);
    t->rows = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_ptr_array_unref);
    va_start(ap, align);
    while ((h = va_arg(ap, const char *))) {
        g_ptr_array_add(t->header, g_strdup(h));
    }
    va_end(ap);
    g_assert(strlen(align) == t->header->len);
    return t;
}

void cli_table_add(CliTable *table, ...)
{
    GPtrArray *row = g_ptr_array_new_with_free_func(g_free);
    va_list ap;
    guint i;

    va_start(ap, table);
    for (i = 0; i < table->header->len; i++) {
        g_autofree char *cell = va_arg(ap, char *);

        /* Cells may hold what a QEMU said: never raw to the terminal */
        g_ptr_array_add(row, cell ? cli_sanitize(cell) : g_strdup("-"));
    }
    va_end(ap);
    g_ptr_array_add(table->rows, row);
}

static void print_row(CliTable *t, GPtrArray *row, const guint *width,
                      FILE *out)
{
    guint i, n = row->len;

    for (i = 0; i < n; i++) {
        const char *cell = row->pdata[i];
        int pad = width[i] - g_utf8_strlen(cell, -1);

        if (i == n - 1) {
            fprintf(out, "%s\n", cell);
        } else if (t->align[i] == 'r') {
            fprintf(out, "%*s%s  ", pad, "", cell);
        } else {
            fprintf(out, "%s%*s  ", cell, pad, "");
        }
    }
}

void cli_table_print(CliTable *table, FILE *out)
{
    g_autofree guint *width = g_new0(guint, table->header->len);
    guint i, r;

    for (i = 0; i < table->header->len; i++) {
        width[i] = g_utf8_strlen(table->header->pdata[i], -1);
        for (r = 0; r < table->rows->len; r++) {
            GPtrArray *row = table->rows->pdata[r];

            width[i] = MAX(width[i], g_utf8_strlen(row->pdata[i], -1));
        }
    }
    print_row(table, table->header, width, out);
    for (r = 0; r < table->rows->len; r++) {
        print_row(table, table->rows->pdata[r], width, out);
    }
}

void cli_table_free(CliTable *table)
{
    if (table) {
        g_ptr_array_unref(table->header);
        g_ptr_array_unref(table->rows);
        g_free(table->align);
        g_free(table);
    }
}

void cli_json_u64(JsonBuilder *builder, const char *name, guint64 value)
{
    json_builder_set_member_name(builder, name);
    /* json-glib's integers are signed (and its doubles print as "1e+19.0",
     * not JSON): a larger figure, which no QEMU has, is shown clamped */
    json_builder_add_int_value(builder, (gint64)MIN(value, G_MAXINT64));
}

void cli_json_str(JsonBuilder *builder, const char *name, const char *value)
{
    json_builder_set_member_name(builder, name);
    json_builder_add_string_value(builder, value);
}

void cli_print_json(JsonBuilder *builder)
{
    g_autoptr(JsonNode) root = json_builder_get_root(builder);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *text = NULL;

    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

char *cli_size(guint64 bytes, gboolean exact)
{
    return exact ? g_strdup_printf("%" G_GUINT64_FORMAT, bytes) :
        units_format_size(bytes);
}
