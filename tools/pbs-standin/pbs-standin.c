/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A stand-in for libproxmox_backup_qemu, the Proxmox Backup Server client
 * library that pve-qemu links.
 *
 * Why it exists: the real library is written in Rust and comes from
 * Proxmox's own package repository; neither it nor the crates it is built
 * from can be had on the machines this project builds on.  pve-qemu's
 * meson.build requires it, so without a library of that name pve-qemu's
 * QEMU (and its VMA backups, which need no backup server) cannot be built
 * or tested at all.  This library implements the functions of the public
 * C header (current-api.h from proxmox/proxmox-backup-qemu, installed as
 * <proxmox-backup-qemu.h>) that pve-qemu calls, and nothing else: every
 * operation that would talk to a Proxmox Backup Server fails with
 * PBS_STANDIN_ERROR through the header's convention (a negative result or
 * NULL, and a message in *error that the caller frees with
 * proxmox_backup_free_error()).  Creating a backup handle only records
 * its arguments in the real library (no server is contacted), so it
 * succeeds here too and the failure comes, as it would for an unreachable
 * server, from connecting.  Asynchronous calls complete from another
 * thread, as the real library's do.
 *
 * Built by scripts/pve-check.sh against the header of a
 * proxmox-backup-qemu checkout; never installed, never shipped.
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <proxmox-backup-qemu.h>

#define PBS_STANDIN_ERROR \
    "Proxmox Backup Server support is not part of this build"

struct StandinHandle {
    char magic[8];
};

static char *standin_error(char **error)
{
    if (error) {
        *error = strdup(PBS_STANDIN_ERROR);
    }
    return NULL;
}

static int standin_fail(char **error)
{
    standin_error(error);
    return -1;
}

/* An asynchronous call: fail it from a thread of our own. */
typedef struct StandinAsync {
    void (*callback)(void *);
    void *callback_data;
    int *result;
    char **error;
} StandinAsync;

static void *standin_async_thread(void *opaque)
{
    StandinAsync *a = opaque;

    *a->result = standin_fail(a->error);
    a->callback(a->callback_data);
    free(a);
    return NULL;
}

static void standin_async_fail(void (*callback)(void *), void *callback_data,
                               int *result, char **error)
{
    StandinAsync *a = malloc(sizeof(*a));
    pthread_t thread;
    pthread_attr_t attr;

    if (!a) {
        abort();
    }
    *a = (StandinAsync) { callback, callback_data, result, error };
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, standin_async_thread, a) != 0) {
        standin_async_thread(a);    /* no thread: complete right here */
    }
    pthread_attr_destroy(&attr);
}

const char *proxmox_backup_qemu_version(void)
{
    return "stand-in (" PBS_STANDIN_ERROR ")";
}

void proxmox_backup_free_error(char *ptr)
{
    free(ptr);
}

/* Backups */

struct ProxmoxBackupHandle *proxmox_backup_new_ns(const char *repo,
                                                  const char *backup_ns,
                                                  const char *backup_id,
                                                  uint64_t backup_time,
                                                  uint64_t chunk_size,
                                                  const char *password,
                                                  const char *keyfile,
                                                  const char *key_password,
                                                  const char *master_keyfile,
                                                  bool compress,
                                                  bool encrypt,
                                                  const char *fingerprint,
                                                  char **error)
{
    struct StandinHandle *h;

    if (!repo || !backup_id) {
        return (struct ProxmoxBackupHandle *)standin_error(error);
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        return (struct ProxmoxBackupHandle *)standin_error(error);
    }
    memcpy(h->magic, "standin", 8);
    return (struct ProxmoxBackupHandle *)h;
}

void proxmox_backup_connect_async(struct ProxmoxBackupHandle *handle,
                                  void (*callback)(void *),
                                  void *callback_data,
                                  int *result,
                                  char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_abort(struct ProxmoxBackupHandle *handle,
                          const char *reason)
{
}

int proxmox_backup_check_incremental(struct ProxmoxBackupHandle *handle,
                                     const char *device_name,
                                     uint64_t size)
{
    return 0;
}

void proxmox_backup_register_image_async(struct ProxmoxBackupHandle *handle,
                                         const char *device_name,
                                         uint64_t size,
                                         bool incremental,
                                         void (*callback)(void *),
                                         void *callback_data,
                                         int *result,
                                         char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_add_config_async(struct ProxmoxBackupHandle *handle,
                                     const char *name,
                                     const uint8_t *data,
                                     uint64_t size,
                                     void (*callback)(void *),
                                     void *callback_data,
                                     int *result,
                                     char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_write_data_async(struct ProxmoxBackupHandle *handle,
                                     uint8_t dev_id,
                                     const uint8_t *data,
                                     uint64_t offset,
                                     uint64_t size,
                                     void (*callback)(void *),
                                     void *callback_data,
                                     int *result,
                                     char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_close_image_async(struct ProxmoxBackupHandle *handle,
                                      uint8_t dev_id,
                                      void (*callback)(void *),
                                      void *callback_data,
                                      int *result,
                                      char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_finish_async(struct ProxmoxBackupHandle *handle,
                                 void (*callback)(void *),
                                 void *callback_data,
                                 int *result,
                                 char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

void proxmox_backup_disconnect(struct ProxmoxBackupHandle *handle)
{
    free(handle);
}

/* Restores (pbs-restore, the pbs block driver) */

struct ProxmoxRestoreHandle *proxmox_restore_new_ns(const char *repo,
                                                    const char *snapshot,
                                                    const char *namespace_,
                                                    const char *password,
                                                    const char *keyfile,
                                                    const char *key_password,
                                                    const char *fingerprint,
                                                    char **error)
{
    return (struct ProxmoxRestoreHandle *)standin_error(error);
}

int proxmox_restore_connect(struct ProxmoxRestoreHandle *handle, char **error)
{
    return standin_fail(error);
}

void proxmox_restore_disconnect(struct ProxmoxRestoreHandle *handle)
{
    free(handle);
}

int proxmox_restore_image(struct ProxmoxRestoreHandle *handle,
                          const char *archive_name,
                          int (*callback)(void *, uint64_t,
                                          const unsigned char *, uint64_t),
                          void *callback_data,
                          char **error,
                          bool verbose)
{
    return standin_fail(error);
}

int proxmox_restore_open_image(struct ProxmoxRestoreHandle *handle,
                               const char *archive_name,
                               char **error)
{
    return standin_fail(error);
}

long proxmox_restore_get_image_length(struct ProxmoxRestoreHandle *handle,
                                      uint8_t aid,
                                      char **error)
{
    return standin_fail(error);
}

void proxmox_restore_read_image_at_async(struct ProxmoxRestoreHandle *handle,
                                         uint8_t aid,
                                         uint8_t *data,
                                         uint64_t offset,
                                         uint64_t size,
                                         void (*callback)(void *),
                                         void *callback_data,
                                         int *result,
                                         char **error)
{
    standin_async_fail(callback, callback_data, result, error);
}

/*
 * The library's state that migration carries along (its record of the
 * last backups, for incremental ones): a stand-in that never backed up to
 * a server has none.
 */
uint8_t *proxmox_export_state(uintptr_t *buf_size)
{
    *buf_size = 0;
    return NULL;
}

void proxmox_import_state(const uint8_t *buf, uintptr_t buf_size)
{
}

void proxmox_free_state_buf(uint8_t *buf)
{
    free(buf);
}
