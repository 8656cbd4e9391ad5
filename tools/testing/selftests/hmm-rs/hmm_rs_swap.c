// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs swap kselftests: what HMM_RS_MIGRATE (include/uapi/hmm_rs.h) does
 * with swapped-out pages, which migrate_vma_setup() leaves behind.
 *
 * swap.s2d_not_present: pages swapped out with MADV_PAGEOUT (checked in
 *   /proc/self/pagemap) stay where they are, each with HMM_RS_NOT_PRESENT
 *   and no retry bit: a module cannot tell a swap entry from a hole or
 *   another owner's page on 7.3, and trying again does not bring the page
 *   back.
 * swap.s2d_fault_in: the same pages with HMM_RS_REQ_FAULT are faulted back
 *   in first and migrate: all MIGRATED, on the device per SNAPSHOT, and
 *   their data intact when the CPU reads them back.
 * swap.s2node_fault_in: the same to NUMA node 1 (HMM_RS_DST_NODE): left
 *   in swap without the request, faulted in and moved to node 1 with it,
 *   per move_pages(2), data intact.
 * swap.fault_in_needs_system: HMM_RS_REQ_FAULT without
 *   HMM_RS_SELECT_SYSTEM is EINVAL.
 *
 * The fixture swaps to the RAM disk /dev/ram0 (CONFIG_BLK_DEV_RAM; the
 * swap header is written here, no mkswap needed) and turns it off again.
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
#include "uapi/hmm_rs.h"

#define NPAGES 64

FIXTURE(swap)
{
	int fd;
	long page_size;
	char *buf;
	uint8_t status[NPAGES];
};

FIXTURE_SETUP(swap)
{
	int i;

	self->page_size = sysconf(_SC_PAGESIZE);
	ASSERT_EQ(0, hmm_rs_swapon())
		TH_LOG("swap on %s: %s", HMM_RS_SWAP_DEV, strerror(errno));

	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = mmap(NULL, NPAGES * self->page_size,
			 PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	/* Small pages only: a THP would be split on its way out. */
	ASSERT_EQ(0, madvise(self->buf, NPAGES * self->page_size,
			     MADV_NOHUGEPAGE));
	for (i = 0; i < NPAGES; i++)
		memset(self->buf + i * self->page_size, i + 1, self->page_size);
	ASSERT_EQ(0, madvise(self->buf, NPAGES * self->page_size,
			     MADV_PAGEOUT));
	for (i = 0; i < NPAGES; i++)
		ASSERT_EQ(1, hmm_rs_swapped(self->buf + i * self->page_size,
					    self->page_size))
			TH_LOG("page %d", i);
}

FIXTURE_TEARDOWN(swap)
{
	munmap(self->buf, NPAGES * self->page_size);
	close(self->fd);
	swapoff(HMM_RS_SWAP_DEV);
}

TEST_F(swap, s2d_not_present)
{
	struct hmm_rs_migrate m;
	int i;

	ASSERT_EQ(0, hmm_rs_migrate(self->fd, self->buf, NPAGES, self->status,
				    HMM_RS_SELECT_SYSTEM, HMM_RS_DST_DEVICE, 0,
				    &m));
	ASSERT_EQ(0, m.migrated);
	ASSERT_EQ(NPAGES, m.counts[HMM_RS_NOT_PRESENT]);
	for (i = 0; i < NPAGES; i++) {
		uint8_t s = self->status[i];

		ASSERT_EQ(HMM_RS_NOT_PRESENT, s)
			TH_LOG("page %d: status %#x", i, s);
		ASSERT_EQ(1, hmm_rs_swapped(self->buf + i * self->page_size,
					    self->page_size))
			TH_LOG("page %d", i);
	}
}

TEST_F(swap, s2d_fault_in)
{
	struct hmm_rs_migrate m;
	unsigned char snap[NPAGES];
	struct hmm_dmirror_cmd c;
	int i, j;

	ASSERT_EQ(0, hmm_rs_migrate(self->fd, self->buf, NPAGES, self->status,
				    HMM_RS_SELECT_SYSTEM, HMM_RS_DST_DEVICE,
				    HMM_RS_REQ_FAULT, &m));
	ASSERT_EQ(NPAGES, m.migrated);
	for (i = 0; i < NPAGES; i++) {
		uint8_t s = self->status[i];

		ASSERT_EQ(HMM_RS_MIGRATED, s)
			TH_LOG("page %d: status %#x", i, s);
	}
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT,
				(uintptr_t)self->buf, snap, NPAGES, &c));
	for (i = 0; i < NPAGES; i++) {
		unsigned char p = snap[i];

		ASSERT_EQ(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL, p & 0xf0)
			TH_LOG("page %d: snapshot %#x", i, p);
	}
	/* The CPU faults them back: the data came through the swap. */
	for (i = 0; i < NPAGES; i++)
		for (j = 0; j < self->page_size; j += 512)
			ASSERT_EQ(i + 1, self->buf[i * self->page_size + j])
				TH_LOG("page %d byte %d", i, j);
}

TEST_F(swap, s2node_fault_in)
{
	struct hmm_rs_migrate m;
	int i, j;

	/* Without the request they stay in swap, as they do for the device. */
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES,
					 self->status, HMM_RS_SELECT_SYSTEM, 0,
					 1, &m));
	ASSERT_EQ(0, m.migrated);
	ASSERT_EQ(NPAGES, m.counts[HMM_RS_NOT_PRESENT]);
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES,
					 self->status, HMM_RS_SELECT_SYSTEM,
					 HMM_RS_REQ_FAULT, 1, &m));
	ASSERT_EQ(NPAGES, m.migrated);
	for (i = 0; i < NPAGES; i++) {
		uint8_t s = self->status[i];
		int node = hmm_rs_page_node(self->buf + i * self->page_size);

		ASSERT_EQ(HMM_RS_MIGRATED, s)
			TH_LOG("page %d: status %#x", i, s);
		ASSERT_EQ(1, node) TH_LOG("page %d", i);
	}
	for (i = 0; i < NPAGES; i++)
		for (j = 0; j < self->page_size; j += 512)
			ASSERT_EQ(i + 1, self->buf[i * self->page_size + j])
				TH_LOG("page %d byte %d", i, j);
}

TEST_F(swap, fault_in_needs_system)
{
	struct hmm_rs_migrate m;

	ASSERT_EQ(-EINVAL, hmm_rs_migrate(self->fd, self->buf, NPAGES,
					  self->status,
					  HMM_RS_SELECT_DEVICE_PRIVATE,
					  HMM_RS_DST_SYSTEM, HMM_RS_REQ_FAULT,
					  &m));
}

TEST_HARNESS_MAIN
