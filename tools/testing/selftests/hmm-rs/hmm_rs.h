/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the hmm-rs kselftests.
 */
#ifndef HMM_RS_SELFTESTS_H
#define HMM_RS_SELFTESTS_H

#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>

#include "lib/test_hmm_uapi.h"

/*
 * Issues dmirror ioctl @req on @npages pages at @addr with buffer @ptr;
 * copies the command back to @out (if any). Returns 0 or -errno.
 */
static inline int hmm_rs_cmd(int fd, unsigned long req, uint64_t addr,
			     void *ptr, uint64_t npages,
			     struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd c = {
		.addr = addr,
		.ptr = (uintptr_t)ptr,
		.npages = npages,
	};
	int ret = ioctl(fd, req, &c);

	if (out)
		*out = c;
	return ret ? -errno : 0;
}

#endif /* HMM_RS_SELFTESTS_H */
