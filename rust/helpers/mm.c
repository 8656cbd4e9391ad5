// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>

__rust_helper int rust_helper_mmap_write_lock_killable(struct mm_struct *mm)
{
	return mmap_write_lock_killable(mm);
}

__rust_helper void rust_helper_mmap_write_unlock(struct mm_struct *mm)
{
	mmap_write_unlock(mm);
}

__rust_helper int rust_helper_vma_start_write_killable(struct vm_area_struct *vma)
{
	return vma_start_write_killable(vma);
}
