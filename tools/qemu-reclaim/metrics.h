/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Prometheus text exposition format (version 0.0.4) of one pass over the
 * VMs.  Names follow Prometheus' rules: a qemu_reclaim_ prefix, base units
 * in the name (_bytes, _seconds), _total for counters, one "vmid" label.
 */
#pragma once

#include <glib.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* @visits: VmVisit of one pass; @seconds: how long the pass took. */
char *metrics_render(GPtrArray *visits, double seconds);
