/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One visit to one VM, and running visits to many VMs a few at a time.
 *
 * A visit connects, asks QEMU for its allocator statistics, lets the
 * command do more on the same connection (a release), and closes: the
 * socket is never held longer than that, because on Proxmox VE the VM's
 * management shares it and QEMU serves one client per socket at a time.
 */
#pragma once

#include <json-glib/json-glib.h>

#include "qmp-client.h"
#include "targets.h"

typedef enum {
    VM_STATUS_OK,        /* answered x-query-allocator-stats */
    VM_STATUS_UNPATCHED, /* a QEMU without the allocator commands */
    VM_STATUS_ERROR,     /* could not be asked: see error */
} VmStatus;

typedef struct VmVisit VmVisit;
typedef void (*VmVisitFunc)(VmVisit *visit, gpointer user_data);

struct VmVisit {
    char *name;
    char *address;
    VmStatus status;
    char *error;            /* why ERROR, or what UNPATCHED lacks */
    GPid pid;               /* the peer of a Unix socket; 0 if unknown */
    JsonObject *info;       /* the x-query-allocator-stats answer, if OK */
    guint64 rss;            /* VmRSS of /proc/<pid>/status, if has_rss */
    gboolean has_rss;
    QmpClient *client;      /* still connected after OK or UNPATCHED */
    gint64 started_us;      /* monotonic */

    /* private */
    guint timeout_ms;
    VmVisitFunc done;
    gpointer done_data;
};

/*
 * Connect to @target and query its statistics, all within @timeout_ms,
 * then call @done.  The caller frees the visit (which closes the
 * connection) with vm_visit_free().
 */
void vm_visit_start(const VmTarget *target, guint timeout_ms,
                     VmVisitFunc done, gpointer user_data);
void vm_visit_free(VmVisit *visit);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmVisit, vm_visit_free)

/* Record a failure of a later step; closes the connection. */
void vm_visit_fail(VmVisit *visit, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

const char *vm_status_name(VmStatus status);

/*
 * info[group][member], or info[member] when @group is NULL.  QEMU leaves
 * out what it does not know (with glibc: releasable, returned): callers
 * tell "absent" from 0 with vm_info_get_u64() or vm_info_has().
 */
gboolean vm_info_get_u64(JsonObject *info, const char *group,
                         const char *member, guint64 *value);
/* The same, 0 if absent */
guint64 vm_info_u64(JsonObject *info, const char *group, const char *member);
const char *vm_info_str(JsonObject *info, const char *group,
                        const char *member);
gboolean vm_info_has(JsonObject *info, const char *group, const char *member);

/* The allocator: "glibc", "tcmalloc", "jemalloc", "system"; NULL if none */
const char *vm_info_backend(JsonObject *info);
/* Whether the allocator can return memory: all but "system" */
gboolean vm_info_can_release(JsonObject *info);
/* What the allocator holds, allocated + free; FALSE without statistics */
gboolean vm_info_held(JsonObject *info, guint64 *held);
/* Releases so far, manual and automatic */
guint64 vm_info_releases(JsonObject *info);

/* VmRSS of a local process, in bytes; FALSE if it cannot be read. */
gboolean vm_read_rss(GPid pid, guint64 *rss);

/* ---- a few at a time ------------------------------------------------- */

typedef struct Runner Runner;
/* Start job @index; it calls runner_job_done() when it has finished. */
typedef void (*RunnerJobFunc)(Runner *runner, guint index,
                              gpointer user_data);
typedef void (*RunnerDoneFunc)(Runner *runner, gpointer user_data);

Runner *runner_new(guint n_jobs, guint max_parallel, RunnerJobFunc job,
                   RunnerDoneFunc done, gpointer user_data);
void runner_start(Runner *runner);
void runner_job_done(Runner *runner);
guint runner_n_jobs(Runner *runner);
guint runner_n_finished(Runner *runner);
guint runner_n_running(Runner *runner);
void runner_free(Runner *runner);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Runner, runner_free)

/* ---- one visit to every VM ------------------------------------------- */

/* @visits: one VmVisit per target, in order, connections closed; owned by
 * the callee. */
typedef void (*VmPassFunc)(GPtrArray *visits, gpointer user_data);

/* Visit every target in @targets (a GPtrArray of VmTarget), at most
 * @max_parallel at a time, each within @timeout_ms. */
void vm_pass_start(GPtrArray *targets, guint timeout_ms, guint max_parallel,
                   VmPassFunc done, gpointer user_data);
