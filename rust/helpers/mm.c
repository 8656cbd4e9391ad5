// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>

/* Whether a fault is on a PTE (else on a PMD) mapping. */
__rust_helper bool rust_helper_vm_fault_is_pte(const struct vm_fault *vmf)
{
	return vmf->pte;
}
