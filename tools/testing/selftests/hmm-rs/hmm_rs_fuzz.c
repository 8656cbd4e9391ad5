// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs ioctl fuzzer: random sequences of every dmirror ioctl (and unknown
 * ones), on random ranges (mapped read-write, read-only, PROT_NONE, shared
 * memfd, the device's own mapping, unmapped holes, kernel addresses,
 * unaligned, wrapping, just below 2^64) with random page counts (0, 1,
 * small, huge, overflowing) and buffers (valid, too short, NULL, kernel),
 * through several open files, while a second thread remaps, protects,
 * zaps and pages out the same ranges. The process must survive every call,
 * and the device must still work at the end (a READ returns what the CPU
 * wrote). The kernel side of "no splat" is the runner's.
 *
 * Seeded and bounded: HMM_RS_FUZZ_SEED (default: from the clock),
 * HMM_RS_FUZZ_CALLS (100000), HMM_RS_FUZZ_SECS (300, whichever ends
 * first). Prints the seed and the command that replays it, the calls made
 * and the count of each errno per ioctl.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest.h"
#include "hmm_rs.h"

#define NFILES 3
#define REGION_PAGES 128
#define BUF_SIZE (1UL << 20)
#define MAX_ERRNO 140

static const unsigned long cmds[] = {
	HMM_DMIRROR_READ, HMM_DMIRROR_WRITE, HMM_DMIRROR_MIGRATE_TO_DEV,
	HMM_DMIRROR_MIGRATE_TO_SYS, HMM_DMIRROR_SNAPSHOT,
	HMM_DMIRROR_EXCLUSIVE, HMM_DMIRROR_CHECK_EXCLUSIVE,
	HMM_DMIRROR_RELEASE, HMM_DMIRROR_FLAGS, HMM_DMIRROR_READ_UNLOCKED,
};
static const char *const cmd_names[] = {
	"READ", "WRITE", "MIGRATE_TO_DEV", "MIGRATE_TO_SYS", "SNAPSHOT",
	"EXCLUSIVE", "CHECK_EXCLUSIVE", "RELEASE", "FLAGS", "READ_UNLOCKED",
	"unknown",
};
#define NCMDS ARRAY_SIZE(cmds)

/* Per ioctl (and "unknown"), how often each errno came back (0: success). */
static unsigned long counts[NCMDS + 1][MAX_ERRNO + 1];

/* The ranges the fuzzer and the remapping thread share. */
enum { R_RW, R_RO, R_NONE, R_SHARED, R_THP, NREGIONS };
static char *regions[NREGIONS];
static size_t region_size[NREGIONS];
static long page_size;
static int stop;

/* xorshift64*: one generator per thread, seeded from the run's seed. */
static uint64_t next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static uint64_t pick(uint64_t *s, uint64_t n)
{
	return n ? next(s) % n : 0;
}

static uint64_t random_addr(uint64_t *s)
{
	int r = pick(s, NREGIONS);

	switch (pick(s, 12)) {
	case 0:	/* an address nobody maps */
		return 0x100000000000ULL + pick(s, 1 << 20) * page_size;
	case 1:	/* the kernel's */
		return 0xffff888000000000ULL + pick(s, 1 << 20) * page_size;
	case 2:	/* just below 2^64 */
		return -(uint64_t)((1 + pick(s, 600)) * page_size);
	case 3:	/* unaligned */
		return (uintptr_t)regions[r] + 1 + pick(s, page_size - 1);
	case 4:
		return 0;
	default:	/* in a region, maybe running past its end */
		return (uintptr_t)regions[r] +
			pick(s, region_size[r] / page_size + 8) * page_size;
	}
}

static uint64_t random_npages(uint64_t *s)
{
	switch (pick(s, 10)) {
	case 0:
		return 0;
	case 1:
		return 1ULL << 40;
	case 2:
		return UINT64_MAX / page_size + pick(s, 3);
	case 3:
		return UINT64_MAX;
	case 4:
		return 1;
	default:
		return 1 + pick(s, 2 * REGION_PAGES);
	}
}

static void *random_ptr(uint64_t *s, char *buf)
{
	switch (pick(s, 8)) {
	case 0:
		return NULL;
	case 1:
		return (void *)0xffff888000000000ULL;
	case 2:	/* near the end of the buffer: too short */
		return buf + BUF_SIZE - page_size;
	default:
		return buf;
	}
}

/* The second thread: remaps, protects, zaps and pages out the regions. */
static void *remapper(void *arg)
{
	uint64_t s = *(uint64_t *)arg;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		int r = pick(&s, NREGIONS);
		size_t off = pick(&s, region_size[r] / page_size) * page_size;
		size_t len = (1 + pick(&s, 64)) * page_size;

		if (off + len > region_size[r])
			len = region_size[r] - off;
		switch (pick(&s, 6)) {
		case 0:
			madvise(regions[r] + off, len, MADV_DONTNEED);
			break;
		case 1:
			madvise(regions[r] + off, len, MADV_PAGEOUT);
			break;
		case 2:
			mprotect(regions[r] + off, len, PROT_NONE);
			mprotect(regions[r] + off, len, r == R_RO ? PROT_READ :
				 r == R_NONE ? PROT_NONE : PROT_READ | PROT_WRITE);
			break;
		case 3:
			if (r == R_RW || r == R_THP)
				memset(regions[r] + off, (int)pick(&s, 256), len);
			break;
		default:
			usleep(50);
			break;
		}
	}
	return NULL;
}

static int setup_regions(void)
{
	int memfd = memfd_create("hmm-rs-fuzz", 0);
	char *thp;

	region_size[R_RW] = region_size[R_RO] = region_size[R_NONE] =
		region_size[R_SHARED] = REGION_PAGES * page_size;
	region_size[R_THP] = 4UL << 20;
	regions[R_RW] = mmap(NULL, region_size[R_RW], PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	regions[R_RO] = mmap(NULL, region_size[R_RO], PROT_READ,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	regions[R_NONE] = mmap(NULL, region_size[R_NONE], PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memfd < 0 || ftruncate(memfd, region_size[R_SHARED]))
		return -1;
	regions[R_SHARED] = mmap(NULL, region_size[R_SHARED],
				 PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	close(memfd);
	thp = mmap(NULL, region_size[R_THP] + (2UL << 20),
		   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (thp == MAP_FAILED)
		return -1;
	regions[R_THP] = (char *)(((uintptr_t)thp + (2UL << 20) - 1) &
				  ~((2UL << 20) - 1));
	madvise(regions[R_THP], region_size[R_THP], MADV_HUGEPAGE);
	for (int r = 0; r < NREGIONS; r++)
		if (regions[r] == MAP_FAILED)
			return -1;
	memset(regions[R_RW], 1, region_size[R_RW]);
	memset(regions[R_THP], 2, region_size[R_THP]);
	return 0;
}

/* After all that, a device READ still sees what the CPU wrote. */
static int device_still_works(void)
{
	char *page = mmap(NULL, page_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *out = malloc(page_size);
	struct hmm_dmirror_cmd c;
	int fd = open("/dev/hmm_dmirror0", O_RDWR), ret;

	if (fd < 0 || page == MAP_FAILED || !out)
		return -1;
	memset(page, 0x5a, page_size);
	ret = hmm_rs_cmd(fd, HMM_DMIRROR_READ, (uintptr_t)page, out, 1, &c);
	close(fd);
	if (ret)
		return ret;
	return memcmp(page, out, page_size) ? -1 : 0;
}

int main(void)
{
	const char *env = getenv("HMM_RS_FUZZ_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	unsigned long calls = 100000, made = 0;
	double secs = 300;
	uint64_t s, s2;
	struct timespec t0, t;
	int fds[NFILES], i, c, e, ret;
	pthread_t thread;
	char *buf, *devmap;

	ksft_print_header();
	ksft_set_plan(1);
	if (getenv("HMM_RS_FUZZ_CALLS"))
		calls = strtoul(getenv("HMM_RS_FUZZ_CALLS"), NULL, 0);
	if (getenv("HMM_RS_FUZZ_SECS"))
		secs = atof(getenv("HMM_RS_FUZZ_SECS"));
	ksft_print_msg("seed %llu; replay: HMM_RS_FUZZ_SEED=%llu HMM_RS_FUZZ_CALLS=%lu %s\n",
		       (unsigned long long)seed, (unsigned long long)seed, calls,
		       "/tests/hmm_rs_fuzz");
	s = seed * 2 + 1;
	s2 = seed * 6 + 5;
	page_size = sysconf(_SC_PAGESIZE);
	buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || setup_regions())
		ksft_exit_fail_msg("setup: %s\n", strerror(errno));
	for (i = 0; i < NFILES; i++) {
		fds[i] = open(i == 2 ? "/dev/hmm_dmirror1" : "/dev/hmm_dmirror0",
			      O_RDWR);
		if (fds[i] < 0)
			ksft_exit_fail_msg("open: %s\n", strerror(errno));
	}
	/* The device's own mapping is a range too. */
	devmap = mmap(NULL, 4 * page_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      fds[0], 0);
	if (devmap != MAP_FAILED) {
		regions[R_NONE] = devmap;
		region_size[R_NONE] = 4 * page_size;
	}
	if (pthread_create(&thread, NULL, remapper, &s2))
		ksft_exit_fail_msg("pthread_create\n");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (made = 0; made < calls; made++) {
		int f = pick(&s, NFILES);
		struct hmm_dmirror_cmd out;
		unsigned long req;

		if (made % 256 == 0) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > secs)
				break;
		}
		c = pick(&s, NCMDS + 1);
		req = c < (int)NCMDS ? cmds[c] :
			_IOWR('H', 0x40 + pick(&s, 0x40), struct hmm_dmirror_cmd);
		/* RELEASE evicts everything: now and then only. */
		if (req == HMM_DMIRROR_RELEASE && pick(&s, 20))
			req = HMM_DMIRROR_CHECK_EXCLUSIVE;
		if (req == HMM_DMIRROR_FLAGS && pick(&s, 4))
			req = HMM_DMIRROR_SNAPSHOT;
		if (req == HMM_DMIRROR_RELEASE)
			c = 7;
		else if (req == HMM_DMIRROR_CHECK_EXCLUSIVE)
			c = 6;
		else if (req == HMM_DMIRROR_SNAPSHOT)
			c = 4;
		ret = hmm_rs_cmd(fds[f], req, random_addr(&s), random_ptr(&s, buf),
				 random_npages(&s), &out);
		e = -ret;
		counts[c][e > MAX_ERRNO ? MAX_ERRNO : e]++;
		/* Close and reopen a file now and then. */
		if (!pick(&s, 5000)) {
			close(fds[f]);
			fds[f] = open("/dev/hmm_dmirror0", O_RDWR);
			if (fds[f] < 0)
				ksft_exit_fail_msg("reopen: %s\n", strerror(errno));
		}
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t);
	ksft_print_msg("%lu calls in %.1f s\n", made,
		       t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9);
	for (c = 0; c <= (int)NCMDS; c++) {
		char line[512];
		int n = 0;

		for (e = 0; e <= MAX_ERRNO; e++)
			if (counts[c][e])
				n += snprintf(line + n, sizeof(line) - n, " %s=%lu",
					      e ? strerrorname_np(e) ?: "E?" : "ok",
					      counts[c][e]);
		if (n)
			ksft_print_msg("%-16s%s\n", cmd_names[c], line);
	}
	ret = device_still_works();
	if (ret)
		ksft_print_msg("device READ afterwards: %s\n",
			       ret < 0 ? strerror(-ret) : "wrong data");
	ksft_test_result(!ret, "fuzz.ioctls_survived_and_device_works\n");
	for (i = 0; i < NFILES; i++)
		close(fds[i]);
	ksft_finished();
}
