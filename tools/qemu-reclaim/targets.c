/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which QEMUs to talk to (see targets.h).
 */
#include <glob.h>
#include <sys/stat.h>

#include "targets.h"

void vm_target_free(VmTarget *target)
{
    if (target) {
        g_free(target->name);
        g_free(target->address);
        g_free(target);
    }
}

static gboolean is_socket(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

int targets_compare_names(const char *a, const char *b)
{
    size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");

    /* VM ids in numeric order: 99 before 100 */
    if (la && lb && la != lb) {
        return la < lb ? -1 : 1;
    }
    return strcmp(a, b);
}

static int compare_paths(gconstpointer a, gconstpointer b)
{
    g_autofree char *na = g_path_get_basename(*(char *const *)a);
    g_autofree char *nb = g_path_get_basename(*(char *const *)b);

    return targets_compare_names(na, nb);
}

static char *name_of(const char *path)
{
    g_autofree char *base = g_path_get_basename(path);

    if (g_str_has_suffix(base, ".qmp") && strlen(base) > 4) {
        base[strlen(base) - 4] = '\0';
    }
    return g_steal_pointer(&base);
}

static void add(GPtrArray *out, GHashTable *seen, const char *name,
                const char *address)
{
    VmTarget *t;

    if (g_hash_table_contains(seen, address)) {
        return;
    }
    g_hash_table_add(seen, g_strdup(address));
    t = g_new0(VmTarget, 1);
    t->name = g_strdup(name);
    t->address = g_strdup(address);
    g_ptr_array_add(out, t);
}

static gboolean add_directory(GPtrArray *out, GHashTable *seen,
                              const char *dir, GError **error)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, error);
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    const char *entry;
    guint i;

    if (!d) {
        return FALSE;
    }
    while ((entry = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, entry, NULL);

        if (g_str_has_suffix(entry, ".qmp") && is_socket(path)) {
            g_ptr_array_add(paths, g_steal_pointer(&path));
        }
    }
    g_ptr_array_sort(paths, compare_paths);
    for (i = 0; i < paths->len; i++) {
        g_autofree char *name = name_of(paths->pdata[i]);

        add(out, seen, name, paths->pdata[i]);
    }
    return TRUE;
}

static gboolean add_glob(GPtrArray *out, GHashTable *seen,
                         const char *pattern, GError **error)
{
    glob_t g = { 0 };
    int found = 0;
    size_t i;

    if (glob(pattern, 0, NULL, &g) == 0) {
        for (i = 0; i < g.gl_pathc; i++) {
            if (is_socket(g.gl_pathv[i])) {
                g_autofree char *name = name_of(g.gl_pathv[i]);

                add(out, seen, name, g.gl_pathv[i]);
                found++;
            }
        }
    }
    globfree(&g);
    if (!found) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                    "no socket matches '%s'", pattern);
        return FALSE;
    }
    return TRUE;
}

static gboolean add_spec(GPtrArray *out, GHashTable *seen, const char *spec,
                         GError **error)
{
    if (!*spec) {
        g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                            "an empty target");
        return FALSE;
    }
    if (g_str_has_prefix(spec, "tcp:")) {
        if (!strchr(spec + 4, ':')) {
            g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "'%s': a TCP target is tcp:HOST:PORT", spec);
            return FALSE;
        }
        add(out, seen, spec + 4, spec);
        return TRUE;
    }
    if (g_str_has_prefix(spec, "unix:")) {
        spec += 5;
    }
    if (strpbrk(spec, "*?[")) {
        return add_glob(out, seen, spec, error);
    }
    if (g_file_test(spec, G_FILE_TEST_IS_DIR)) {
        return add_directory(out, seen, spec, error);
    }
    /* A path: taken as it is, so that a missing socket is reported per VM */
    {
        g_autofree char *name = name_of(spec);

        add(out, seen, name, spec);
    }
    return TRUE;
}

GPtrArray *targets_resolve(const char *const *specs, GError **error)
{
    g_autoptr(GPtrArray) out =
        g_ptr_array_new_with_free_func((GDestroyNotify)vm_target_free);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       NULL);
    g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
    guint i;

    if (!specs || !specs[0]) {
        if (!g_file_test(TARGETS_PROXMOX_DIR, G_FILE_TEST_IS_DIR)) {
            g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                        "no targets: give QMP socket paths, directories or "
                        "globs (the Proxmox VE directory %s does not exist "
                        "here)", TARGETS_PROXMOX_DIR);
            return NULL;
        }
        if (!add_directory(out, seen, TARGETS_PROXMOX_DIR, error)) {
            return NULL;
        }
        return g_steal_pointer(&out);
    }
    for (i = 0; specs[i]; i++) {
        if (!add_spec(out, seen, specs[i], error)) {
            return NULL;
        }
    }
    /* Two sockets with one name (two directories): name them by path */
    for (i = 0; i < out->len; i++) {
        VmTarget *t = out->pdata[i];

        /* The table borrows the names: a name it holds is never freed */
        if (g_hash_table_contains(names, t->name)) {
            g_free(t->name);
            t->name = g_strdup(t->address);
        } else {
            g_hash_table_add(names, t->name);
        }
    }
    return g_steal_pointer(&out);
}
