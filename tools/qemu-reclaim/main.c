/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-reclaim: see which QEMU processes on a host hold free allocator
 * memory, give it back, and export the figures to monitoring.
 */
#include <locale.h>
#include <stdlib.h>

#include "cli.h"
#include "units.h"

static const CliCommand *const commands[] = {
    &cli_stats, &cli_release, &cli_export, &cli_auto, NULL
};

static char *opt_timeout;
static char *opt_jobs;
static gboolean opt_verbose;
static gboolean opt_version;

static const GOptionEntry common_entries[] = {
    { "timeout", 't', 0, G_OPTION_ARG_STRING, &opt_timeout,
      "Time allowed per VM to connect and answer, in ms (default 5000)",
      "MS" },
    { "jobs", 'j', 0, G_OPTION_ARG_STRING, &opt_jobs,
      "VMs served at once (default: 32; 2 for release; all for export)",
      "N" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose,
      "Log each VM that does not answer (export, auto)", NULL },
    { "version", 'V', 0, G_OPTION_ARG_NONE, &opt_version,
      "Print the version and exit", NULL },
    G_OPTION_ENTRY_NULL
};

static void usage(FILE *out)
{
    guint i;

    fprintf(out,
            "Usage: qemu-reclaim [OPTION...] COMMAND [OPTION...] "
            "[TARGET...]\n\n"
            "Shows and returns memory that QEMU processes have freed but\n"
            "their memory allocator still holds.\n\nCommands:\n");
    for (i = 0; commands[i]; i++) {
        fprintf(out, "  %-9s %s\n", commands[i]->name, commands[i]->summary);
    }
    fprintf(out,
            "\nTargets: QMP socket paths, directories (every *.qmp in them),\n"
            "quoted globs, or tcp:HOST:PORT.  Default: %s.\n\n"
            "Options of every command:\n"
            "  -t, --timeout=MS  time allowed per VM (default 5000)\n"
            "  -j, --jobs=N      VMs served at once\n"
            "  -v, --verbose     log VMs that do not answer\n"
            "  -V, --version     print the version\n"
            "  -h, --help        this text; COMMAND --help: its options\n\n"
            "Exit status: 0 ok, 1 a VM failed, 2 bad usage.\n"
            "See qemu-reclaim(1).\n", TARGETS_PROXMOX_DIR);
}

/* Whether @arg is an option that takes the next word as its value. */
static gboolean takes_value(const char *arg)
{
    const GOptionEntry *lists[G_N_ELEMENTS(commands) + 1];
    const GOptionEntry *e;
    guint i, n = 0;

    if (arg[0] != '-' || strchr(arg, '=')) {
        return FALSE;
    }
    lists[n++] = common_entries;
    for (i = 0; commands[i]; i++) {
        lists[n++] = commands[i]->entries;
    }
    for (i = 0; i < n; i++) {
        for (e = lists[i]; e->long_name; e++) {
            if (e->arg == G_OPTION_ARG_NONE) {
                continue;
            }
            if ((arg[1] == '-' && !strcmp(arg + 2, e->long_name)) ||
                (arg[1] == e->short_name && arg[1] && !arg[2])) {
                return TRUE;
            }
        }
    }
    return FALSE;
}

static const CliCommand *find_command(int *argc, char **argv)
{
    int i, j;

    for (i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--")) {
            break;
        }
        if (takes_value(argv[i])) {
            i++;            /* "--timeout 2000 stats": 2000 is no command */
            continue;
        }
        for (j = 0; commands[j]; j++) {
            if (!strcmp(argv[i], commands[j]->name)) {
                /* Take the command word out; the rest is options, targets */
                memmove(&argv[i], &argv[i + 1],
                        (*argc - i) * sizeof(char *));
                (*argc)--;
                return commands[j];
            }
        }
        if (argv[i][0] != '-') {
            return NULL;    /* a word that is no command */
        }
    }
    return NULL;
}

/* The first word that is neither an option nor an option's value. */
static const char *first_word(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (takes_value(argv[i])) {
            i++;
        } else if (argv[i][0] != '-') {
            return argv[i];
        }
    }
    return NULL;
}

static gboolean check_common(CliCommon *common, GError **error)
{
    guint64 v;

    common->timeout_ms = 5000;
    if (opt_timeout) {
        if (!units_parse_uint(opt_timeout, 1, 3600 * 1000, "--timeout", &v,
                              error)) {
            return FALSE;
        }
        common->timeout_ms = v;
    }
    if (opt_jobs) {
        if (!units_parse_uint(opt_jobs, 1, 1024, "--jobs", &v, error)) {
            return FALSE;
        }
        common->jobs = v;
    }
    common->verbose = opt_verbose;
    return TRUE;
}

static gboolean has_arg(int argc, char **argv, const char *a, const char *b)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            break;
        }
        if (!strcmp(argv[i], a) || (b && !strcmp(argv[i], b))) {
            return TRUE;
        }
    }
    return FALSE;
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) ctx = NULL;
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) args = NULL;
    g_autofree char *param = NULL;
    const CliCommand *cmd;
    CliCommon common = { 0 };
    int n;

    setlocale(LC_ALL, "");
    cmd = find_command(&argc, argv);
    if (!cmd) {
        if (has_arg(argc, argv, "--version", "-V")) {
            printf("qemu-reclaim %s\n", QR_VERSION);
            return EXIT_OK;
        }
        if (has_arg(argc, argv, "--help", "-h")) {
            usage(stdout);
            return EXIT_OK;
        }
        const char *word = first_word(argc, argv);

        if (argc <= 1) {
            usage(stderr);
        } else if (word) {
            g_autofree char *w = cli_sanitize(word);

            g_printerr("qemu-reclaim: '%s' is not a command "
                       "(stats, release, export, auto)\n"
                       "(see qemu-reclaim --help)\n", w);
        } else {
            g_printerr("qemu-reclaim: no command given\n"
                       "(see qemu-reclaim --help)\n");
        }
        return EXIT_USAGE;
    }

    param = g_strdup_printf("%s %s", cmd->name, cmd->parameter);
    ctx = g_option_context_new(param);
    g_option_context_set_summary(ctx, cmd->description);
    g_option_context_add_main_entries(ctx, cmd->entries, NULL);
    {
        GOptionGroup *g = g_option_group_new("common",
                                             "Options of every command:",
                                             "Show options of every command",
                                             NULL, NULL);

        g_option_group_add_entries(g, common_entries);
        g_option_context_add_group(ctx, g);
    }
    /* Options may follow targets: "stats /run/qemu-server --json" */
    args = g_strdupv(argv);
    if (!g_option_context_parse_strv(ctx, &args, &err) ||
        !check_common(&common, &err) || !cmd->check(&common, &err)) {
        g_printerr("qemu-reclaim %s: %s\n(see qemu-reclaim %s --help)\n",
                   cmd->name, err->message, cmd->name);
        return EXIT_USAGE;
    }
    if (opt_version) {
        printf("qemu-reclaim %s\n", QR_VERSION);
        return EXIT_OK;
    }
    cli_log_init(common.verbose);
    n = g_strv_length(args);
    common.targets = args + 1;
    if (n > 1 && !strcmp(args[1], "--")) {
        common.targets++;
    }
    return cmd->run(&common);
}
