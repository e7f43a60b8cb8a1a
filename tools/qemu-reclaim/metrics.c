/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Prometheus text exposition of one pass over the VMs (see metrics.h).
 */
#include "metrics.h"
#include "vm.h"

/* A label value as the text format wants it: \ " and newline escaped. */
static char *label_value(const char *s)
{
    GString *out = g_string_new(NULL);

    for (; *s; s++) {
        switch (*s) {
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '"':
            g_string_append(out, "\\\"");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        default:
            g_string_append_c(out, *s);
        }
    }
    return g_string_free(out, FALSE);
}

static void family(GString *out, const char *name, const char *type,
                   const char *help)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                           name, type);
}

/* One family with one sample per VM that has the value. */
static void per_vm(GString *out, GPtrArray *visits, char **vmids,
                   const char *name, const char *type, const char *help,
                   const char *group, const char *member)
{
    guint64 value;
    guint i;

    family(out, name, type, help);
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        /* A figure QEMU does not tell has no sample, never a 0 */
        if (vm_info_get_u64(v->info, group, member, &value)) {
            g_string_append_printf(out, "%s{vmid=\"%s\"} %" G_GUINT64_FORMAT
                                   "\n", name, vmids[i], value);
        }
    }
}

char *metrics_render(GPtrArray *visits, double seconds)
{
    static const char *const triggers[][2] = {
        { "manual", "manual-releases" },
        { "automatic", "automatic-releases" },
    };
    GString *out = g_string_new(NULL);
    g_auto(GStrv) vmids = g_new0(char *, visits->len + 1);
    guint64 value;
    guint i, t;

    for (i = 0; i < visits->len; i++) {
        vmids[i] = label_value(((VmVisit *)visits->pdata[i])->name);
    }

    family(out, "qemu_reclaim_up", "gauge",
           "Whether the VM's QMP socket answered (1) or not (0).");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        g_string_append_printf(out, "qemu_reclaim_up{vmid=\"%s\"} %d\n",
                               vmids[i], v->status != VM_STATUS_ERROR);
    }
    family(out, "qemu_reclaim_supported", "gauge",
           "Whether the VM's QEMU has the allocator commands (1) or not "
           "(0).");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (v->status != VM_STATUS_ERROR) {
            g_string_append_printf(out,
                                   "qemu_reclaim_supported{vmid=\"%s\"} %d\n",
                                   vmids[i], v->status == VM_STATUS_OK);
        }
    }
    family(out, "qemu_reclaim_allocator_info", "gauge",
           "The memory allocator QEMU was built with, as a label.");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];
        const char *backend = vm_info_backend(v->info);

        if (backend) {
            g_autofree char *b = label_value(backend);

            g_string_append_printf(out, "qemu_reclaim_allocator_info"
                                   "{vmid=\"%s\",backend=\"%s\"} 1\n",
                                   vmids[i], b);
        }
    }
    per_vm(out, visits, vmids, "qemu_reclaim_allocated_bytes", "gauge",
           "Memory in use by QEMU, as its allocator counts it.",
           "stats", "allocated");
    family(out, "qemu_reclaim_held_bytes", "gauge",
           "Memory the allocator holds: allocated plus free.");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (vm_info_held(v->info, &value)) {
            g_string_append_printf(out, "qemu_reclaim_held_bytes"
                                   "{vmid=\"%s\"} %" G_GUINT64_FORMAT "\n",
                                   vmids[i], value);
        }
    }
    per_vm(out, visits, vmids, "qemu_reclaim_free_bytes", "gauge",
           "Memory the allocator holds that QEMU does not use.",
           "stats", "free");
    per_vm(out, visits, vmids, "qemu_reclaim_releasable_bytes", "gauge",
           "Free memory a release can return to the OS now "
           "(absent where the allocator cannot tell).",
           "stats", "releasable");
    per_vm(out, visits, vmids, "qemu_reclaim_returned_bytes", "gauge",
           "Memory returned to the OS whose address space the allocator "
           "keeps (absent where it does not count it).",
           "stats", "returned");
    family(out, "qemu_reclaim_resident_memory_bytes", "gauge",
           "Resident set size of the QEMU process, from /proc.");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (v->has_rss) {
            g_string_append_printf(out, "qemu_reclaim_resident_memory_bytes"
                                   "{vmid=\"%s\"} %" G_GUINT64_FORMAT "\n",
                                   vmids[i], v->rss);
        }
    }
    family(out, "qemu_reclaim_releases_total", "counter",
           "Releases of free memory since QEMU started, by trigger.");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        for (t = 0; v->info && t < G_N_ELEMENTS(triggers); t++) {
            g_string_append_printf(out, "qemu_reclaim_releases_total"
                                   "{vmid=\"%s\",trigger=\"%s\"} %"
                                   G_GUINT64_FORMAT "\n", vmids[i],
                                   triggers[t][0],
                                   vm_info_u64(v->info, NULL,
                                               triggers[t][1]));
        }
    }
    per_vm(out, visits, vmids, "qemu_reclaim_last_release_returned_bytes",
           "gauge", "What the last release returned (absent where the "
           "allocator does not count it).", "last-release", "returned");
    family(out, "qemu_reclaim_last_release_duration_seconds", "gauge",
           "How long the last release took.");
    for (i = 0; i < visits->len; i++) {
        VmVisit *v = visits->pdata[i];

        if (vm_info_get_u64(v->info, "last-release", "duration-us",
                            &value)) {
            g_string_append_printf(out,
                                   "qemu_reclaim_last_release_duration_seconds"
                                   "{vmid=\"%s\"} %.6f\n", vmids[i],
                                   value / 1e6);
        }
    }
    family(out, "qemu_reclaim_vms", "gauge",
           "VMs found by the exporter's targets.");
    g_string_append_printf(out, "qemu_reclaim_vms %u\n", visits->len);
    family(out, "qemu_reclaim_scrape_duration_seconds", "gauge",
           "How long asking every VM took.");
    g_string_append_printf(out, "qemu_reclaim_scrape_duration_seconds %.6f\n",
                           seconds);
    return g_string_free(out, FALSE);
}
