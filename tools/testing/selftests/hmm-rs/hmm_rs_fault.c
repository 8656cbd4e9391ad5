// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs fault kselftests: what a device access that has to fault pages in
 * does to the pages it need not fault.
 *
 * own_pages.*: a READ, READ_UNLOCKED or WRITE through a device, of a range
 *   whose first half is not mapped yet (it needs a fault) and whose second
 *   half is on that device, leaves the second half on the device. On 7.3,
 *   hmm_range_fault() reports a device-private page of the caller's owner
 *   without faulting it, but once a page of the walk needs a fault,
 *   hmm_do_fault() calls handle_mm_fault() on every page from that one to
 *   the end of the walk, and a fault on a device-private page migrates it
 *   back to system memory: the device's own pages bounce back and forth. The
 *   C test_hmm does so (it is this suite's reference, not counted);
 *   rust_test_hmm faults only what needs a fault (patches/README).
 *
 * write_after_fork: a WRITE through the device to its own pages
 *   that a fork made read-only (copy-on-write) succeeds and writes: the
 *   device cannot break copy-on-write, so the pages come back to system
 *   memory, as a CPU write would bring them. The C test_hmm fails the
 *   WRITE with EFAULT after a WARN_ON in dmirror_do_fault().
 *
 * Runs with the module loaded; see scripts/plans/check.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"

#define NPAGES 16

FIXTURE(own_pages)
{
	int fd;
	long page_size;
	char *buf;
	char *mirror;
};

FIXTURE_VARIANT(own_pages)
{
	unsigned long req;
};

FIXTURE_VARIANT_ADD(own_pages, read) { .req = HMM_DMIRROR_READ };
FIXTURE_VARIANT_ADD(own_pages, read_unlocked) { .req = HMM_DMIRROR_READ_UNLOCKED };
FIXTURE_VARIANT_ADD(own_pages, write) { .req = HMM_DMIRROR_WRITE };

FIXTURE_SETUP(own_pages)
{
	self->page_size = sysconf(_SC_PAGESIZE);
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->buf = mmap(NULL, NPAGES * self->page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	self->mirror = malloc(NPAGES * self->page_size);
	ASSERT_NE(NULL, self->mirror);
}

FIXTURE_TEARDOWN(own_pages)
{
	free(self->mirror);
	munmap(self->buf, NPAGES * self->page_size);
	close(self->fd);
}

static bool on_device(unsigned char perm)
{
	return (perm & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL ||
	       (perm & 0xf0) == HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL;
}

TEST_F(own_pages, stay_on_the_device)
{
	long ps = self->page_size;
	char *half = self->buf + NPAGES / 2 * ps;
	unsigned char perm[NPAGES];
	struct hmm_dmirror_cmd c;
	int i;

	/* Pages 0 to 7 stay untouched: nothing is mapped, they need a fault. */
	for (i = NPAGES / 2; i < NPAGES; i++)
		memset(self->buf + i * ps, 0x5a ^ i, ps);
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				(uintptr_t)half, self->mirror, NPAGES / 2, &c));
	ASSERT_EQ(NPAGES / 2, c.cpages);
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)half,
				perm, NPAGES / 2, NULL));
	for (i = 0; i < NPAGES / 2; i++)
		ASSERT_TRUE(on_device(perm[i]));

	if (variant->req == HMM_DMIRROR_WRITE)
		for (i = 0; i < NPAGES; i++)
			memset(self->mirror + i * ps, 0xa5 ^ i, ps);
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, variant->req, (uintptr_t)self->buf,
				self->mirror, NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);

	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT,
				(uintptr_t)self->buf, perm, NPAGES, NULL));
	for (i = NPAGES / 2; i < NPAGES; i++) {
		if (!on_device(perm[i]))
			TH_LOG("page %d: snapshot byte 0x%02x: no longer on the device",
			       i, perm[i]);
		ASSERT_TRUE(on_device(perm[i]));
	}

	/* And every byte is what the device read or wrote. */
	for (i = 0; i < NPAGES; i++) {
		char want = variant->req == HMM_DMIRROR_WRITE ? 0xa5 ^ i :
			    i < NPAGES / 2 ? 0 : 0x5a ^ i;

		if (variant->req != HMM_DMIRROR_WRITE)
			ASSERT_EQ(want, self->mirror[i * ps]);
		ASSERT_EQ(want, self->buf[i * ps]);
		ASSERT_EQ(want, self->buf[(i + 1) * ps - 1]);
	}
}

TEST(write_after_fork)
{
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char perm[NPAGES];
	struct hmm_dmirror_cmd c;
	char *buf, *mirror;
	int i, fd, status;
	pid_t pid;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(fd, 0);
	buf = mmap(NULL, NPAGES * ps, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	mirror = malloc(NPAGES * ps);
	ASSERT_NE(NULL, mirror);
	for (i = 0; i < NPAGES; i++)
		memset(buf + i * ps, 0x5a ^ i, ps);
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)buf,
				mirror, NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);

	/* The fork write-protects the device entries; the child leaves at once. */
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid)
		_exit(0);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, perm,
				NPAGES, NULL));
	for (i = 0; i < NPAGES; i++)
		ASSERT_EQ(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ,
			  perm[i]);

	for (i = 0; i < NPAGES; i++)
		memset(mirror + i * ps, 0xa5 ^ i, ps);
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)buf, mirror,
				NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_EQ((char)(0xa5 ^ i), buf[i * ps]);
		ASSERT_EQ((char)(0xa5 ^ i), buf[(i + 1) * ps - 1]);
	}
	free(mirror);
	munmap(buf, NPAGES * ps);
	close(fd);
}

TEST_HARNESS_MAIN
