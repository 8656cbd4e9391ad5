// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs benchmark: times the HMM_DMIRROR_* operations of one driver (the
 * C test_hmm or rust_test_hmm, whichever is loaded) on /dev/hmm_dmirror0,
 * at every size from 2 MiB to 1 GiB (the fixture's variants), and the
 * guest's memcpy() at the same sizes.
 *
 * Each case does one untimed warm-up iteration, then times the operation
 * with CLOCK_MONOTONIC, only around the operation itself (setup, checks
 * and teardown are outside the window), checks its result, and prints one
 * line per operation
 *   # bench: op=NAME size=BYTES ns=MEAN iters=N
 * where MEAN is the mean time of one operation of BYTES in ns. A case
 * whose operation fails or returns wrong data is "not ok" and prints no
 * line. Meant to run under QEMU -icount (make bench), where guest time
 * counts instructions: the figures of two drivers compare exactly.
 *
 * With HMM_RS_BENCH_PROFILE set to the tracefs directory, each timed
 * operation runs once, under the ftrace function profiler (make bench
 * PROFILE=1), and its profile follows its figure:
 *   # profile: op=NAME size=BYTES <a line of trace_stat/function0>
 * for the HMM_RS_BENCH_PROFILE_TOP (default 40) functions of most time.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "lib/test_hmm_uapi.h"

#define DEVICE		"/dev/hmm_dmirror0"
#define THP_SIZE	(2UL << 20)
/* At least this much is timed per operation and size, in whole iterations. */
#define MIN_TIMED	(16UL << 20)

/* The tracefs directory in profile mode, else NULL. */
static const char *profile_dir;

FIXTURE(bench)
{
	int fd;
	unsigned long page_size;
	unsigned long npages;
	unsigned int iters;	/* timed iterations, after one warm-up */
	unsigned char *mirror;	/* the device side's buffer, variant->size */
};

FIXTURE_VARIANT(bench)
{
	unsigned long size;
};

FIXTURE_VARIANT_ADD(bench, 2M) { .size = 2UL << 20 };
FIXTURE_VARIANT_ADD(bench, 16M) { .size = 16UL << 20 };
FIXTURE_VARIANT_ADD(bench, 128M) { .size = 128UL << 20 };
FIXTURE_VARIANT_ADD(bench, 1G) { .size = 1UL << 30 };

FIXTURE_SETUP(bench)
{
	unsigned long i;

	profile_dir = getenv("HMM_RS_BENCH_PROFILE");
	self->page_size = sysconf(_SC_PAGESIZE);
	self->npages = variant->size / self->page_size;
	self->iters = variant->size >= MIN_TIMED || profile_dir ?
		      1 : MIN_TIMED / variant->size;
	self->fd = open(DEVICE, O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->mirror = mmap(NULL, variant->size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->mirror);
	/* Populated once, so that no timed READ faults it in. */
	for (i = 0; i < variant->size; i += self->page_size)
		self->mirror[i] = 0;
}

FIXTURE_TEARDOWN(bench)
{
	munmap(self->mirror, variant->size);
	close(self->fd);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Writes @val to the tracefs file @name; 0 or -errno. */
static int tracefs_write(const char *name, const char *val)
{
	char path[256];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", profile_dir, name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * The time of one operation at one size, summed over its timed
 * iterations. The warm-up iteration is timed into a struct timer with no
 * @op, which is never reported.
 */
struct timer {
	const char *op;
	unsigned long size;
	uint64_t ns;
};

/* Prints the profile of the window that just ended (profile mode). */
static void print_profile(const struct timer *tm)
{
	char path[256], line[256];
	unsigned int top, n = 0;
	const char *s;
	FILE *f;

	s = getenv("HMM_RS_BENCH_PROFILE_TOP");
	top = s ? atoi(s) : 40;
	snprintf(path, sizeof(path), "%s/trace_stat/function0", profile_dir);
	f = fopen(path, "r");
	if (!f) {
		printf("# profile: op=%s size=%lu cannot read %s\n", tm->op,
		       tm->size, path);
		return;
	}
	/* Two header lines, then the functions, most time first. */
	while (fgets(line, sizeof(line), f) && n < top + 2)
		if (n++ >= 2)
			printf("# profile: op=%s size=%lu %s", tm->op, tm->size,
			       line);
	fclose(f);
}

/*
 * A timed window: in profile mode, the function profiler runs in it
 * (enabling it clears what it counted before), and what it counted is
 * printed at its end unless this is the warm-up.
 */
static uint64_t window_begin(void)
{
	if (profile_dir && tracefs_write("function_profile_enabled", "1"))
		printf("# profile: cannot enable the profiler in %s\n",
		       profile_dir);
	return now_ns();
}

static void window_end(uint64_t t0, struct timer *tm)
{
	tm->ns += now_ns() - t0;
	if (!profile_dir)
		return;
	tracefs_write("function_profile_enabled", "0");
	if (tm->op)
		print_profile(tm);
}

static void report(const struct timer *tm, unsigned int iters)
{
	printf("# bench: op=%s size=%lu ns=%llu iters=%u\n", tm->op, tm->size,
	       (unsigned long long)(tm->ns / iters), iters);
	fflush(stdout);
}

/*
 * One ioctl; returns -errno on failure. *cmd holds the driver's answer.
 * Timed into @ns unless it is NULL.
 */
static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long size, struct hmm_dmirror_cmd *cmd,
		   struct timer *ns)
{
	uint64_t t = 0;
	int ret = 0;

	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (uintptr_t)addr;
	cmd->ptr = (uintptr_t)ptr;
	cmd->npages = size / sysconf(_SC_PAGESIZE);
	if (ns)
		t = window_begin();
	while (ioctl(fd, req, cmd)) {
		if (errno != EINTR) {
			ret = -errno;
			break;
		}
	}
	if (ns)
		window_end(t, ns);
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
		      unsigned long page_size, struct timer *ns)
{
	uint32_t sum = 0;
	unsigned long i;
	uint64_t t;

	t = window_begin();
	for (i = 0; i < size; i += page_size)
		sum += *(const uint32_t *)(p + i);
	window_end(t, ns);
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

/*
 * open() and close() of the device: a mirror and its MMU notifier. Not
 * the same work in the two drivers (test_hmm evicts its whole chunk on
 * release): make bench shows it apart.
 */
TEST(open_close)
{
	const unsigned int iters = 64;
	uint64_t total = 0, t;
	unsigned int i;
	int fd;

	for (i = 0; i <= iters; i++) {
		t = now_ns();
		fd = open(DEVICE, O_RDWR);
		ASSERT_GE(fd, 0);
		ASSERT_EQ(0, close(fd));
		if (i)
			total += now_ns() - t;
	}
	report(&(struct timer){ .op = "open_close", .ns = total }, iters);
}

/* The guest's memcpy() of the variant's size, between populated buffers. */
TEST_F(bench, memcpy)
{
	unsigned long size = variant->size;
	unsigned char *src, *dst;
	uint64_t total = 0, t;
	unsigned int i;

	src = buffer(size, 0);
	dst = buffer(size, 0);
	ASSERT_NE(NULL, src);
	ASSERT_NE(NULL, dst);
	fill(src, size, 3);
	memset(dst, 0, size);
	for (i = 0; i <= self->iters; i++) {
		t = now_ns();
		memcpy(dst, src, size);
		if (i)
			total += now_ns() - t;
		ASSERT_TRUE(filled(dst, size, 3));
		memset(dst, 0, size);
	}
	munmap(src, size);
	munmap(dst, size);
	report(&(struct timer){ .op = "memcpy", .size = size, .ns = total },
	       self->iters);
}

/*
 * HMM_DMIRROR_READ of memory the device has not mirrored yet (it faults
 * the range in with hmm_range_fault()), then again (mirrored: copy only),
 * then munmap() of the mirrored range (the invalidation callback).
 */
TEST_F(bench, read)
{
	unsigned long size = variant->size;
	struct timer cold = { .op = "read_fault", .size = size };
	struct timer hot = { .op = "read_mirrored", .size = size };
	struct timer unmap = { .op = "munmap_mirrored", .size = size };
	struct timer warm = { .op = NULL };
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i;
	uint64_t t;

	for (i = 0; i <= self->iters; i++) {
		buf = buffer(size, 0);
		ASSERT_NE(NULL, buf);
		fill(buf, size, i);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, buf,
				     self->mirror, size, &cmd,
				     i ? &cold : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_LE(1, cmd.faults);
		ASSERT_TRUE(filled(self->mirror, size, i));

		memset(self->mirror, 0, size);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, buf,
				     self->mirror, size, &cmd,
				     i ? &hot : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_EQ(0, cmd.faults);
		ASSERT_TRUE(filled(self->mirror, size, i));

		t = window_begin();
		ASSERT_EQ(0, munmap(buf, size));
		window_end(t, i ? &unmap : &warm);
	}
	report(&cold, self->iters);
	report(&hot, self->iters);
	report(&unmap, self->iters);
}

/*
 * HMM_DMIRROR_WRITE into memory never touched (the device's write fault
 * allocates every page), then again into the same, mirrored, range.
 */
TEST_F(bench, write)
{
	unsigned long size = variant->size;
	struct timer cold = { .op = "write_fault", .size = size };
	struct timer hot = { .op = "write_mirrored", .size = size };
	struct timer warm = { .op = NULL };
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i;

	for (i = 0; i <= self->iters; i++) {
		buf = buffer(size, 0);
		ASSERT_NE(NULL, buf);
		fill(self->mirror, size, i);

		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, buf,
				     self->mirror, size, &cmd,
				     i ? &cold : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_LE(1, cmd.faults);
		ASSERT_TRUE(filled(buf, size, i));

		fill(self->mirror, size, ~i);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, buf,
				     self->mirror, size, &cmd,
				     i ? &hot : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_EQ(0, cmd.faults);
		ASSERT_TRUE(filled(buf, size, ~i));
		ASSERT_EQ(0, munmap(buf, size));
	}
	report(&cold, self->iters);
	report(&hot, self->iters);
}

/*
 * MIGRATE_TO_DEV and MIGRATE_TO_SYS of a buffer of base pages (@huge 0)
 * or THPs (@huge 1), then MIGRATE_TO_DEV again and the CPU faulting the
 * pages back one by one (one fault per THP). A fresh buffer each
 * iteration: what comes back from the device may be base pages.
 */
static void migrate(struct __test_metadata *_metadata,
		    FIXTURE_DATA(bench) * self, unsigned long size, int huge,
		    const char *to_dev_op, const char *to_sys_op,
		    const char *back_op)
{
	struct timer to_dev = { .op = to_dev_op, .size = size };
	struct timer to_sys = { .op = to_sys_op, .size = size };
	struct timer back = { .op = back_op, .size = size };
	struct timer warm = { .op = NULL };
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned int i;
	uint32_t sum;

	for (i = 0; i <= self->iters; i++) {
		buf = buffer(size, huge);
		ASSERT_NE(NULL, buf);
		fill(buf, size, i);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf,
				     self->mirror, size, &cmd,
				     i ? &to_dev : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_TRUE(filled(self->mirror, size, i));
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf,
				     self->mirror, size, &cmd,
				     i ? &to_sys : &warm));
		/* test_hmm counts a THP that moved whole once. */
		if (!huge || cmd.cpages != size / THP_SIZE)
			ASSERT_EQ(self->npages, cmd.cpages);
		ASSERT_TRUE(filled(buf, size, i));
		ASSERT_EQ(0, munmap(buf, size));

		buf = buffer(size, huge);
		ASSERT_NE(NULL, buf);
		fill(buf, size, ~i);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf,
				     self->mirror, size, &cmd, NULL));
		ASSERT_EQ(self->npages, cmd.cpages);
		sum = touch(buf, size, self->page_size, i ? &back : &warm);
		ASSERT_EQ(page_sum(size, self->page_size, ~i), sum);
		ASSERT_TRUE(filled(buf, size, ~i));
		ASSERT_EQ(0, munmap(buf, size));
	}
	report(&to_dev, self->iters);
	report(&to_sys, self->iters);
	report(&back, self->iters);
}

TEST_F(bench, migrate_4k)
{
	migrate(_metadata, self, variant->size, 0, "to_dev_4k", "to_sys_4k",
		"fault_back_4k");
}

TEST_F(bench, migrate_thp)
{
	migrate(_metadata, self, variant->size, 1, "to_dev_thp", "to_sys_thp",
		"fault_back_thp");
}

/* HMM_DMIRROR_SNAPSHOT of populated, writable base pages. */
TEST_F(bench, snapshot)
{
	unsigned long size = variant->size;
	struct timer total = { .op = "snapshot", .size = size }, warm = { .op = NULL };
	struct hmm_dmirror_cmd cmd;
	unsigned char *buf;
	unsigned long j;
	unsigned int i;

	buf = buffer(size, 0);
	ASSERT_NE(NULL, buf);
	fill(buf, size, 1);
	for (i = 0; i <= self->iters; i++) {
		memset(self->mirror, 0xff, self->npages);
		ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_SNAPSHOT, buf,
				     self->mirror, size, &cmd,
				     i ? &total : &warm));
		ASSERT_EQ(self->npages, cmd.cpages);
		for (j = 0; j < self->npages; j++)
			ASSERT_EQ(HMM_DMIRROR_PROT_WRITE, self->mirror[j]);
	}
	ASSERT_EQ(0, munmap(buf, size));
	report(&total, self->iters);
}

TEST_HARNESS_MAIN
