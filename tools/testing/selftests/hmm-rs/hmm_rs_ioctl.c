// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs ioctl kselftests: bad input to /dev/hmm_dmirror* gets an errno,
 * never a crash, and good input works. Runs against either driver (the C
 * test_hmm or rust_test_hmm), so both are held to the same ABI.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"

#define NPAGES 16

#define cmd(fd, req, addr, ptr, npages, out) \
	hmm_rs_cmd(fd, req, (uintptr_t)(addr), ptr, npages, out)

FIXTURE(dmirror)
{
	int fd;
	long page_size;
	char *buf;
	char *mirror;
};

FIXTURE_SETUP(dmirror)
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

FIXTURE_TEARDOWN(dmirror)
{
	munmap(self->buf, NPAGES * self->page_size);
	free(self->mirror);
	close(self->fd);
}

TEST_F(dmirror, read_works)
{
	struct hmm_dmirror_cmd c;
	int i;

	for (i = 0; i < NPAGES; i++)
		self->buf[i * self->page_size] = i + 1;
	ASSERT_EQ(0, cmd(self->fd, HMM_DMIRROR_READ, self->buf, self->mirror,
			 NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);
	ASSERT_EQ(1, c.faults);
	for (i = 0; i < NPAGES; i++)
		ASSERT_EQ(i + 1, self->mirror[i * self->page_size]);
}

TEST_F(dmirror, unaligned_addr_is_einval)
{
	ASSERT_EQ(-EINVAL, cmd(self->fd, HMM_DMIRROR_READ, self->buf + 1,
			       self->mirror, 1, NULL));
}

TEST_F(dmirror, zero_pages_is_einval)
{
	ASSERT_EQ(-EINVAL, cmd(self->fd, HMM_DMIRROR_READ, self->buf,
			       self->mirror, 0, NULL));
}

TEST_F(dmirror, wrapping_range_is_einval)
{
	ASSERT_EQ(-EINVAL, cmd(self->fd, HMM_DMIRROR_READ, self->buf,
			       self->mirror, UINT64_MAX / 4096, NULL));
}

TEST_F(dmirror, unknown_ioctl_is_einval)
{
	ASSERT_EQ(-EINVAL, cmd(self->fd, _IOWR('H', 0x7f, struct hmm_dmirror_cmd),
			       self->buf, self->mirror, 1, NULL));
}

TEST_F(dmirror, bad_cmd_pointer_is_efault)
{
	ASSERT_NE(0, ioctl(self->fd, HMM_DMIRROR_READ, (void *)16));
	ASSERT_EQ(EFAULT, errno);
}

TEST_F(dmirror, bad_buffer_pointer_is_efault)
{
	ASSERT_EQ(-EFAULT, cmd(self->fd, HMM_DMIRROR_READ, self->buf,
			       (void *)16, NPAGES, NULL));
}

TEST_F(dmirror, write_from_bad_pointer_is_efault)
{
	ASSERT_EQ(-EFAULT, cmd(self->fd, HMM_DMIRROR_WRITE, self->buf,
			       (void *)16, NPAGES, NULL));
}

/* No VMA at the address: hmm_range_fault() cannot fault it in. */
TEST_F(dmirror, unmapped_read_is_efault)
{
	char *hole = mmap(NULL, self->page_size, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, hole);
	ASSERT_EQ(0, munmap(hole, self->page_size));
	ASSERT_EQ(-EFAULT, cmd(self->fd, HMM_DMIRROR_READ, hole, self->mirror,
			       1, NULL));
}

TEST_F(dmirror, migrate_unmapped_is_einval)
{
	char *hole = mmap(NULL, self->page_size, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, hole);
	ASSERT_EQ(0, munmap(hole, self->page_size));
	ASSERT_EQ(-EINVAL, cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, hole,
			       self->mirror, 1, NULL));
	ASSERT_EQ(-EINVAL, cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, hole,
			       self->mirror, 1, NULL));
}

TEST_F(dmirror, migrate_roundtrip_keeps_data)
{
	struct hmm_dmirror_cmd c;
	int i;

	for (i = 0; i < NPAGES; i++)
		self->buf[i * self->page_size] = 0x5a ^ i;
	ASSERT_EQ(0, cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf,
			 self->mirror, NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);
	ASSERT_EQ(0, cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, self->buf,
			 self->mirror, NPAGES, &c));
	ASSERT_EQ(NPAGES, c.cpages);
	for (i = 0; i < NPAGES; i++)
		ASSERT_EQ((char)(0x5a ^ i), self->buf[i * self->page_size]);
}

TEST_HARNESS_MAIN
