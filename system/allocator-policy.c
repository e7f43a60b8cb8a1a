/*
 * The "allocator-policy" object: when QEMU returns free allocator memory
 * by itself
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   -object allocator-policy,id=policy,release-after-backup=on,
 *           min-releasable=64M,idle-interval=1000
 *   { "execute": "qom-set", "arguments": { "path": "/objects/policy",
 *     "property": "release-after-backup", "value": false } }
 *
 * Without the object, the defaults apply.  There can be one at a time;
 * deleting it restores the defaults.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/allocator.h"
#include "qemu/module.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "qom/object_interfaces.h"

#define TYPE_ALLOCATOR_POLICY "allocator-policy"
OBJECT_DECLARE_SIMPLE_TYPE(AllocatorPolicyObject, ALLOCATOR_POLICY)

#define DEFAULT_MIN_RELEASABLE (4 * MiB)
#define DEFAULT_IDLE_INTERVAL_MS 1000
#define MAX_IDLE_INTERVAL_MS (3600 * 1000)

/*
 * The values live in the object until it is complete, so that an object
 * that fails to be created changes nothing; from then on each change
 * applies at once.
 */
struct AllocatorPolicyObject {
    Object parent_obj;
    bool active;
    bool release_after_backup;
    uint64_t min_releasable;
    uint32_t idle_interval_ms;
};

static AllocatorPolicyObject *the_policy;

static void policy_apply(AllocatorPolicyObject *p)
{
    if (p->active) {
        qemu_allocator_set_release_after_backup(p->release_after_backup);
        qemu_allocator_set_min_releasable(p->min_releasable);
        qemu_allocator_set_idle_interval(p->idle_interval_ms);
    }
}

static bool policy_get_release_after_backup(Object *obj, Error **errp)
{
    return ALLOCATOR_POLICY(obj)->release_after_backup;
}

static void policy_set_release_after_backup(Object *obj, bool value,
                                            Error **errp)
{
    AllocatorPolicyObject *p = ALLOCATOR_POLICY(obj);

    p->release_after_backup = value;
    policy_apply(p);
}

static void policy_get_min_releasable(Object *obj, Visitor *v,
                                      const char *name, void *opaque,
                                      Error **errp)
{
    visit_type_size(v, name, &ALLOCATOR_POLICY(obj)->min_releasable, errp);
}

static void policy_set_min_releasable(Object *obj, Visitor *v,
                                      const char *name, void *opaque,
                                      Error **errp)
{
    uint64_t value;

    if (!visit_type_size(v, name, &value, errp)) {
        return;
    }
    /* QMP turns -1 into UINT64_MAX: refuse it rather than guess */
    if (value > INT64_MAX) {
        error_setg(errp, "'%s' must be at most %" PRId64, name, INT64_MAX);
        return;
    }
    ALLOCATOR_POLICY(obj)->min_releasable = value;
    policy_apply(ALLOCATOR_POLICY(obj));
}

static void policy_get_idle_interval(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    visit_type_uint32(v, name, &ALLOCATOR_POLICY(obj)->idle_interval_ms,
                      errp);
}

static void policy_set_idle_interval(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    uint32_t value;

    if (!visit_type_uint32(v, name, &value, errp)) {
        return;
    }
    if (value > MAX_IDLE_INTERVAL_MS) {
        error_setg(errp, "'%s' must be at most %d milliseconds (0 disables "
                   "idle-time releases)", name, MAX_IDLE_INTERVAL_MS);
        return;
    }
    ALLOCATOR_POLICY(obj)->idle_interval_ms = value;
    policy_apply(ALLOCATOR_POLICY(obj));
}

static void policy_complete(UserCreatable *uc, Error **errp)
{
    AllocatorPolicyObject *p = ALLOCATOR_POLICY(uc);

    if (the_policy) {
        error_setg(errp, "there is already an allocator-policy object ('%s'):"
                   " change its properties instead",
                   object_get_canonical_path_component(OBJECT(the_policy)));
        return;
    }
    the_policy = p;
    p->active = true;
    policy_apply(p);
}

static void policy_init(Object *obj)
{
    AllocatorPolicyObject *p = ALLOCATOR_POLICY(obj);

    p->release_after_backup = true;
    p->min_releasable = DEFAULT_MIN_RELEASABLE;
    p->idle_interval_ms = DEFAULT_IDLE_INTERVAL_MS;
}

static void policy_finalize(Object *obj)
{
    AllocatorPolicyObject *p = ALLOCATOR_POLICY(obj);

    if (!p->active) {
        return;
    }
    the_policy = NULL;
    policy_init(obj);
    policy_apply(p);
}

static void policy_class_init(ObjectClass *oc, const void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = policy_complete;
    object_class_property_add_bool(oc, "release-after-backup",
                                   policy_get_release_after_backup,
                                   policy_set_release_after_backup);
    object_class_property_set_description(oc, "release-after-backup",
        "Return free allocator memory when backup jobs end (default on)");
    object_class_property_add(oc, "min-releasable", "size",
                              policy_get_min_releasable,
                              policy_set_min_releasable, NULL, NULL);
    object_class_property_set_description(oc, "min-releasable",
        "Skip an automatic release when less than this many bytes can be "
        "returned (default 4M)");
    object_class_property_add(oc, "idle-interval", "uint32",
                              policy_get_idle_interval,
                              policy_set_idle_interval, NULL, NULL);
    object_class_property_set_description(oc, "idle-interval",
        "Minimum milliseconds between two idle-time releases of the RCU "
        "thread; 0 disables them (default 1000)");
}

static const TypeInfo policy_info = {
    .name = TYPE_ALLOCATOR_POLICY,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(AllocatorPolicyObject),
    .instance_init = policy_init,
    .instance_finalize = policy_finalize,
    .class_init = policy_class_init,
    .interfaces = (const InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { }
    },
};

static void policy_register_types(void)
{
    type_register_static(&policy_info);
}

type_init(policy_register_types);
