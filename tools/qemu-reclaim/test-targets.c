/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which QEMUs a command line names: directories of real Unix sockets, in
 * a temporary directory.  The test command runs this under valgrind too.
 */
#include <glib/gstdio.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>

#include "targets.h"

/* A listening Unix socket at @dir/@name; the caller keeps it open. */
static GSocket *make_socket(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
    g_autoptr(GError) err = NULL;
    GSocket *sock = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, &err);

    g_assert_no_error(err);
    g_socket_bind(sock, addr, TRUE, &err);
    g_assert_no_error(err);
    return sock;
}

static void remove_tree(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *e;

    while (d && (e = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(dir, e, NULL);

        if (g_file_test(p, G_FILE_TEST_IS_DIR)) {
            remove_tree(p);
        } else {
            g_unlink(p);
        }
    }
    g_rmdir(dir);
}

/*
 * VM 100 in three directories: one keeps the name "100", the others are
 * named by their paths; no name is given twice and every socket is there.
 */
static void test_same_name(void)
{
    g_autofree char *top = g_dir_make_tmp("test-targets-XXXXXX", NULL);
    g_autoptr(GPtrArray) socks = g_ptr_array_new_with_free_func(
        g_object_unref);
    g_autoptr(GPtrArray) specs = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) targets = NULL;
    g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(GError) err = NULL;
    guint i, plain = 0;

    for (i = 0; i < 3; i++) {
        char *dir = g_strdup_printf("%s/host%u", top, i);

        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        g_ptr_array_add(socks, make_socket(dir, "100.qmp"));
        g_ptr_array_add(socks, make_socket(dir, "99.qmp"));
        g_ptr_array_add(specs, dir);
    }
    g_ptr_array_add(specs, NULL);
    targets = targets_resolve((const char *const *)specs->pdata, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(targets->len, ==, 6);
    for (i = 0; i < targets->len; i++) {
        VmTarget *t = targets->pdata[i];

        g_assert_true(g_hash_table_add(names, t->name));
        if (g_str_equal(t->name, "100") || g_str_equal(t->name, "99")) {
            plain++;
        } else {
            g_assert_cmpstr(t->name, ==, t->address);
        }
    }
    g_assert_cmpuint(plain, ==, 2);
    remove_tree(top);
}

/* Numeric ids in numeric order; a socket given twice is one VM. */
static void test_order(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-targets-XXXXXX", NULL);
    g_autoptr(GPtrArray) socks = g_ptr_array_new_with_free_func(
        g_object_unref);
    g_autofree char *one = g_build_filename(dir, "101.qmp", NULL);
    const char *specs[] = { dir, one, NULL };
    g_autoptr(GPtrArray) targets = NULL;
    g_autoptr(GError) err = NULL;
    static const char *const want[] = { "9", "99", "100", "101" };
    guint i;

    for (i = 0; i < G_N_ELEMENTS(want); i++) {
        g_autofree char *name = g_strdup_printf("%s.qmp", want[3 - i]);

        g_ptr_array_add(socks, make_socket(dir, name));
    }
    targets = targets_resolve(specs, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(targets->len, ==, G_N_ELEMENTS(want));
    for (i = 0; i < G_N_ELEMENTS(want); i++) {
        g_assert_cmpstr(((VmTarget *)targets->pdata[i])->name, ==, want[i]);
    }
    remove_tree(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/targets/same-name", test_same_name);
    g_test_add_func("/targets/order", test_order);
    return g_test_run();
}
