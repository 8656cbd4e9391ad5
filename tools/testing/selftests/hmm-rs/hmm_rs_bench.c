// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs benchmark: times the HMM_DMIRROR_* operations of one driver (the
 * C test_hmm or rust_test_hmm, whichever is loaded) on /dev/hmm_dmirror0.
 *
 * Each case times one operation with CLOCK_MONOTONIC, only around the
 * operation itself (setup, checks and teardown are outside the window),
 * repeats it, checks its result, and prints one line
 *   # bench: op=NAME ns=MEAN iters=N
 * where MEAN is the mean time of one operation in ns. A case whose
 * operation fails or returns wrong data is "not ok" and prints no line.
 * Meant to run under QEMU -icount (make bench), where guest time counts
 * instructions: the figures of two drivers compare exactly.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "lib/test_hmm_uapi.h"

#define DEVICE		"/dev/hmm_dmirror0"
#define BUF_SIZE	(4UL << 20)	/* 4 MiB: 1024 base pages */
#define THP_SIZE	(2UL << 20)
#define SNAP_SIZE	(16UL << 20)

FIXTURE(bench)
{
	int fd;
	unsigned long page_size;
	unsigned char *mirror;	/* the device side's buffer, BUF_SIZE */
};

FIXTURE_SETUP(bench)
{
	self->page_size = sysconf(_SC_PAGESIZE);
	self->fd = open(DEVICE, O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->mirror = malloc(BUF_SIZE);
	ASSERT_NE(NULL, self->mirror);
}

FIXTURE_TEARDOWN(bench)
{
	free(self->mirror);
	close(self->fd);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void report(const char *op, uint64_t total_ns, unsigned int iters)
{
	printf("# bench: op=%s ns=%llu iters=%u\n", op,
	       (unsigned long long)(total_ns / iters), iters);
	fflush(stdout);
}

/*
 * One ioctl; returns -errno on failure. *cmd holds the driver's answer.
 * Adds the time the ioctl took to *ns unless @ns is NULL.
 */
static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long size, struct hmm_dmirror_cmd *cmd,
		   uint64_t *ns)
{
	uint64_t t;
	int ret = 0;

	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (uintptr_t)addr;
	cmd->ptr = (uintptr_t)ptr;
	cmd->npages = size / sysconf(_SC_PAGESIZE);
	t = now_ns();
	while (ioctl(fd, req, cmd)) {
		if (errno != EINTR) {
			ret = -errno;
			break;
		}
	}
	if (ns)
		*ns += now_ns() - t;
	return ret;
}

/*
 * An anonymous private buffer of @size bytes. @huge: aligned to THP_SIZE
 * and MADV_HUGEPAGE, so that touching it allocates transparent huge
 * pages; else MADV_NOHUGEPAGE, base pages only (the kernel's THP mode is
 * "always"). NULL on failure.
 */
static unsigned char *buffer(unsigned long size, int huge)
{
	unsigned long len = huge ? size + THP_SIZE : size;
	unsigned char *p, *start;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (!huge)
		return madvise(p, size, MADV_NOHUGEPAGE) ? NULL : p;
	start = (unsigned char *)(((uintptr_t)p + THP_SIZE - 1) & ~(THP_SIZE - 1));
	if (start > p)
		munmap(p, start - p);
	munmap(start + size, p + len - (start + size));
	return madvise(start, size, MADV_HUGEPAGE) ? NULL : start;
}

/* Writes one word per 64 bytes, a pattern keyed by @seed. */
static void fill(unsigned char *p, unsigned long size, unsigned int seed)
{
	unsigned long i;

	for (i = 0; i < size; i += 64)
		*(uint32_t *)(p + i) = (uint32_t)(i ^ seed);
}

/* Whether @p holds fill()'s pattern for @seed. */
static int filled(const unsigned char *p, unsigned long size, unsigned int seed)
{
	unsigned long i;

	for (i = 0; i < size; i += 64)
		if (*(const uint32_t *)(p + i) != (uint32_t)(i ^ seed))
			return 0;
	return 1;
}

/*
 * Sums the first word of each page: reading them faults device pages
 * back. The sum is fill()'s pattern's, page_sum(), if the data came back.
 */
static uint32_t touch(const unsigned char *p, unsigned long size,
		      unsigned long page_size)
{
	uint32_t sum = 0;
	unsigned long i;

	for (i = 0; i < size; i += page_size)
		sum += *(const uint32_t *)(p + i);
	return sum;
}

static uint32_t page_sum(unsigned long size, unsigned long page_size,
			 unsigned int seed)
{
	uint32_t sum = 0;
	unsigned long i;

	for (i = 0; i < size; i += page_size)
		sum += (uint32_t)(i ^ seed);
	return sum;
}

/* open() and close() of the device: a mirror and its MMU notifier. */
TEST_F(bench, open_close)
{
	const unsigned int iters = 200;
	uint64_t total = 0, t;
	unsigned int i;
	int fd;

	for (i = 0; i < iters; i++) {
		t = now_ns();
		fd = open(DEVICE, O_RDWR);
		ASSERT_GE(fd, 0);
		ASSERT_EQ(0, close(fd));
		total += now_ns() - t;
	}
	report("open_close", total, iters);
}

/*
 * HMM_DMIRROR_READ of 4 MiB the device has not mirrored yet (it faults
 * the range in with hmm_range_fault()), then again (mirrored: copy only),
 * then munmap() of the mirrored range (the invalidation callback).
 */
TEST_F(bench, read)
{
	const unsigned int iters = 8, warm = 4;
	uint64_t cold = 0, hot = 0, unmap = 0, t;
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i, j;

	for (i = 0; i < iters; i++) {
		buf = buffer(BUF_SIZE, 0);
		ASSERT_NE(NULL, buf);
		fill(buf, BUF_SIZE, i);
		memset(self->mirror, 0, BUF_SIZE);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, buf,
				     self->mirror, BUF_SIZE, &cmd, &cold));
		ASSERT_EQ(BUF_SIZE / self->page_size, cmd.cpages);
		ASSERT_LE(1, cmd.faults);
		ASSERT_TRUE(filled(self->mirror, BUF_SIZE, i));

		for (j = 0; j < warm; j++) {
			ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, buf,
					     self->mirror, BUF_SIZE, &cmd, &hot));
			ASSERT_EQ(BUF_SIZE / self->page_size, cmd.cpages);
			ASSERT_EQ(0, cmd.faults);
		}
		ASSERT_TRUE(filled(self->mirror, BUF_SIZE, i));

		t = now_ns();
		ASSERT_EQ(0, munmap(buf, BUF_SIZE));
		unmap += now_ns() - t;
	}
	report("read_4M_fault", cold, iters);
	report("read_4M_mirrored", hot, iters * warm);
	report("munmap_4M_mirrored", unmap, iters);
}

/*
 * HMM_DMIRROR_WRITE of 4 MiB into memory never touched (the device's
 * write fault allocates every page), then again into the same, mirrored,
 * range.
 */
TEST_F(bench, write)
{
	const unsigned int iters = 8, warm = 4;
	uint64_t cold = 0, hot = 0;
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i, j;

	for (i = 0; i < iters; i++) {
		buf = buffer(BUF_SIZE, 0);
		ASSERT_NE(NULL, buf);
		fill(self->mirror, BUF_SIZE, i);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, buf,
				     self->mirror, BUF_SIZE, &cmd, &cold));
		ASSERT_EQ(BUF_SIZE / self->page_size, cmd.cpages);
		ASSERT_LE(1, cmd.faults);
		ASSERT_TRUE(filled(buf, BUF_SIZE, i));

		fill(self->mirror, BUF_SIZE, ~i);
		for (j = 0; j < warm; j++) {
			ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, buf,
					     self->mirror, BUF_SIZE, &cmd, &hot));
			ASSERT_EQ(BUF_SIZE / self->page_size, cmd.cpages);
			ASSERT_EQ(0, cmd.faults);
		}
		ASSERT_TRUE(filled(buf, BUF_SIZE, ~i));
		ASSERT_EQ(0, munmap(buf, BUF_SIZE));
	}
	report("write_4M_fault", cold, iters);
	report("write_4M_mirrored", hot, iters * warm);
}

/*
 * MIGRATE_TO_DEV and MIGRATE_TO_SYS of 4 MiB of base pages, round trip
 * after round trip on the same buffer, then the CPU faulting the pages
 * back from the device one by one.
 */
TEST_F(bench, migrate_4k)
{
	const unsigned int iters = 8;
	uint64_t to_dev = 0, to_sys = 0, back = 0, t;
	const unsigned long npages = BUF_SIZE / self->page_size;
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i;
	uint32_t sum;

	buf = buffer(BUF_SIZE, 0);
	ASSERT_NE(NULL, buf);
	fill(buf, BUF_SIZE, 0x5a);

	for (i = 0; i < iters; i++) {
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf,
				     self->mirror, BUF_SIZE, &cmd, &to_dev));
		ASSERT_EQ(npages, cmd.cpages);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf,
				     self->mirror, BUF_SIZE, &cmd, &to_sys));
		ASSERT_EQ(npages, cmd.cpages);
		ASSERT_TRUE(filled(buf, BUF_SIZE, 0x5a));
	}
	for (i = 0; i < iters; i++) {
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf,
				     self->mirror, BUF_SIZE, &cmd, NULL));
		ASSERT_EQ(npages, cmd.cpages);
		t = now_ns();
		sum = touch(buf, BUF_SIZE, self->page_size);
		back += now_ns() - t;
		ASSERT_EQ(page_sum(BUF_SIZE, self->page_size, 0x5a), sum);
		ASSERT_TRUE(filled(buf, BUF_SIZE, 0x5a));
	}
	ASSERT_EQ(0, munmap(buf, BUF_SIZE));
	report("migrate_to_dev_4M_4k", to_dev, iters);
	report("migrate_to_sys_4M_4k", to_sys, iters);
	report("cpu_fault_back_4M_4k", back, iters);
}

/*
 * MIGRATE_TO_DEV of a 2 MiB transparent huge page, then the CPU faulting
 * it back. A fresh THP each time: what comes back may be base pages.
 */
TEST_F(bench, migrate_thp)
{
	const unsigned int iters = 8;
	const unsigned long npages = THP_SIZE / self->page_size;
	uint64_t to_dev = 0, back = 0, t;
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i;
	uint32_t sum;

	for (i = 0; i < iters; i++) {
		buf = buffer(THP_SIZE, 1);
		ASSERT_NE(NULL, buf);
		fill(buf, THP_SIZE, i);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf,
				     self->mirror, THP_SIZE, &cmd, &to_dev));
		ASSERT_EQ(npages, cmd.cpages);
		ASSERT_TRUE(filled(self->mirror, THP_SIZE, i));

		t = now_ns();
		sum = touch(buf, THP_SIZE, self->page_size);
		back += now_ns() - t;
		ASSERT_EQ(page_sum(THP_SIZE, self->page_size, i), sum);
		ASSERT_TRUE(filled(buf, THP_SIZE, i));
		ASSERT_EQ(0, munmap(buf, THP_SIZE));
	}
	report("migrate_to_dev_2M_thp", to_dev, iters);
	report("cpu_fault_back_2M_thp", back, iters);
}

/* HMM_DMIRROR_SNAPSHOT of 16 MiB of populated, writable base pages. */
TEST_F(bench, snapshot)
{
	const unsigned int iters = 8;
	const unsigned long npages = SNAP_SIZE / self->page_size;
	struct hmm_dmirror_cmd cmd;
	uint64_t total = 0;
	unsigned char *buf;
	unsigned int i;
	unsigned long j;

	buf = buffer(SNAP_SIZE, 0);
	ASSERT_NE(NULL, buf);
	fill(buf, SNAP_SIZE, 1);
	for (i = 0; i < iters; i++) {
		memset(self->mirror, 0xff, npages);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_SNAPSHOT, buf,
				     self->mirror, SNAP_SIZE, &cmd, &total));
		ASSERT_EQ(npages, cmd.cpages);
		for (j = 0; j < npages; j++)
			ASSERT_EQ(HMM_DMIRROR_PROT_WRITE, self->mirror[j]);
	}
	ASSERT_EQ(0, munmap(buf, SNAP_SIZE));
	report("snapshot_16M", total, iters);
}

TEST_HARNESS_MAIN
