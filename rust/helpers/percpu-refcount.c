// SPDX-License-Identifier: GPL-2.0

#include <linux/percpu-refcount.h>

__rust_helper void rust_helper_percpu_ref_get_many(struct percpu_ref *ref,
						   unsigned long nr)
{
	percpu_ref_get_many(ref, nr);
}

__rust_helper void rust_helper_percpu_ref_put_many(struct percpu_ref *ref,
						   unsigned long nr)
{
	percpu_ref_put_many(ref, nr);
}
