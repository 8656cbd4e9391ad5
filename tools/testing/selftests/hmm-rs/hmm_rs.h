/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the hmm-rs kselftests.
 */
#ifndef HMM_RS_SELFTESTS_H
#define HMM_RS_SELFTESTS_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
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

/* Seconds on the monotonic clock. */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A number from the environment, @def if unset, malformed or negative. */
static inline double env_num(const char *name, double def)
{
	const char *s = getenv(name);
	char *end;
	double v;

	if (!s || !*s)
		return def;
	v = strtod(s, &end);
	return (*end || v < 0) ? def : v;
}

#endif /* HMM_RS_SELFTESTS_H */
