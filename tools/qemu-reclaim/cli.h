/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the commands of qemu-reclaim share: options that every command
 * takes, exit codes, tables, logging.
 */
#pragma once

#include <stdio.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vm.h"

enum {
    EXIT_OK = 0,
    EXIT_VM_FAILED = 1,     /* at least one VM could not be served */
    EXIT_USAGE = 2,         /* bad options, no targets */
};

/* Options of every command, already checked. */
typedef struct {
    guint timeout_ms;
    guint jobs;             /* 0: the command's default */
    gboolean verbose;
    char **targets;         /* what is left on the command line */
} CliCommon;

typedef struct {
    const char *name;
    const char *parameter;  /* for --help: "[TARGET...]" */
    const char *summary;
    const char *description;
    const GOptionEntry *entries;
    /* Check the command's own options; FALSE: usage error */
    gboolean (*check)(CliCommon *common, GError **error);
    int (*run)(CliCommon *common);
} CliCommand;

extern const CliCommand cli_stats;
extern const CliCommand cli_release;
extern const CliCommand cli_export;
extern const CliCommand cli_auto;

/* Targets of the command line, or a message and NULL. */
GPtrArray *cli_targets(CliCommon *common, GError **error);

/*
 * Targets for one pass of a daemon (export, auto): none, rather than an
 * error, when a glob or directory has no VM left; logged with --verbose.
 */
GPtrArray *cli_pass_targets(CliCommon *common);

/*
 * Logging: g_message() for what an operator follows (a release, a VM left
 * alone), g_warning() for failures, g_debug() for what --verbose adds.
 * Under systemd the records go to the journal with their priorities
 * (notice, warning, debug); elsewhere a line on stderr, stamped with the
 * time.  Text that came from a QEMU is shown with its control characters
 * escaped: a peer must not drive the operator's terminal.
 */
void cli_log_init(gboolean verbose);
#define cli_log(...) g_message(__VA_ARGS__)

/* @text with control characters as \xNN and invalid UTF-8 replaced. */
char *cli_sanitize(const char *text);

/* ---- tables ---------------------------------------------------------- */

typedef struct CliTable CliTable;

/* @align: one char per column, 'l' or 'r'; the last column is not padded */
CliTable *cli_table_new(const char *align, ...) G_GNUC_NULL_TERMINATED;
/* Takes ownership of the strings; NULL prints as "-" */
void cli_table_add(CliTable *table, ...);
void cli_table_print(CliTable *table, FILE *out);
void cli_table_free(CliTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CliTable, cli_table_free)

/* A member of the object being built. */
void cli_json_u64(JsonBuilder *builder, const char *name, guint64 value);
void cli_json_str(JsonBuilder *builder, const char *name, const char *value);

/* Print a JSON document built with @builder on stdout, pretty. */
void cli_print_json(JsonBuilder *builder);

/* A size for a table cell: exact bytes with --bytes, else human units. */
char *cli_size(guint64 bytes, gboolean exact);
