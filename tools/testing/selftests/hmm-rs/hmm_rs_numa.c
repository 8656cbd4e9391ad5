// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs NUMA kselftests: HMM_RS_MIGRATE with HMM_RS_DST_NODE
 * (include/uapi/hmm_rs.h), system memory moved between the guest's two
 * nodes (scripts/run-vm.sh: node 0 with the CPUs, node 1 memory only),
 * device memory moved to a chosen node, and the filter the July 2020
 * review asked for, "migrate system memory not already on node X"
 * (HMM_RS_REQ_NOT_ON_NODE). Where a page is, is asked of move_pages(2),
 * the kernel's own answer, not of the driver.
 *
 * nodes: the guest has (at least) two nodes with memory, and the
 *   device refuses the others: ENODEV for one past them, for 1024 and
 *   for (u32)-1.
 * s2s.{0_to_1,1_to_0}.moves: written pages, placed on one node with
 *   move_pages(2), all MIGRATED to the other; each is there after, and
 *   its data intact.
 * s2s.*.not_on_node: half the pages already on the target node: with
 *   HMM_RS_REQ_NOT_ON_NODE those stay, ON_NODE without the retry bit,
 *   the others move; without the flag, all of them move (a new page on
 *   the same node).
 * s2s.*.holes_and_zero: holes and zero pages are not populated on the
 *   node: NOT_PRESENT and ZERO_PAGE, and still a hole and the zero page.
 * s2s.*.no_memory: HMM_DMIRROR_FLAG_FAIL_ALLOC fails the allocation of
 *   one page on the node: NO_MEMORY with the retry bit, and a retry moves
 *   it.
 * s2s.*.thp_kept_whole: a huge page already on the target, with the filter
 *   and without HMM_RS_REQ_THP: ON_NODE|WHOLE, and still one huge page.
 * s2s.*.file_backed: shared memfd pages stay (FILE_BACKED), on their node,
 *   data intact: 7.3's migrate_vma_pages() cannot move a file page to
 *   system memory safely.
 * s2s.*.thp_{whole,split}: a huge page moved whole (HMM_RS_REQ_THP:
 *   MIGRATED|WHOLE, still huge on the target) or split (MIGRATED, small
 *   pages on the target, but for one that was all zeroes: the split maps
 *   it to the zero page, ZERO_PAGE).
 * d2node.{private,coherent}.{to_0,to_1}: pages on a device, moved to a
 *   node: all MIGRATED, on that node, data intact, and no longer on the
 *   device (HMM_DMIRROR_SNAPSHOT).
 * bad_input.*: every malformed node request is refused with its errno
 *   and changes nothing: the status array is not written, and the pages
 *   stay where they were, with their data.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"
#include "uapi/hmm_rs.h"

#define NPAGES 32

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static long ps;

static void __attribute__((constructor)) init_page_size(void)
{
	ps = sysconf(_SC_PAGESIZE);
}

/* Never 0: an all-zero page is one a THP split maps to the zero page. */
static unsigned char pat(unsigned long page, int seed)
{
	return (page * 7 + seed) % 255 + 1;
}

static void fill(char *buf, unsigned long n, int seed)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		memset(buf + i * ps, pat(i, seed), ps);
}

/*
 * The first of the @n pages at @buf that does not hold fill(@seed), else
 * -1; page @zero, if not -1, must hold zeroes.
 */
static long bad_page_but(const char *buf, unsigned long n, int seed,
			 long zero)
{
	unsigned long i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < (unsigned long)ps; j += 256)
			if ((unsigned char)buf[i * ps + j] !=
			    ((long)i == zero ? 0 : pat(i, seed)))
				return i;
	return -1;
}

static long bad_page(const char *buf, unsigned long n, int seed)
{
	return bad_page_but(buf, n, seed, -1);
}

/* The first of the @n pages at @buf not on @node, else -1. */
static long off_node(const char *buf, unsigned long n, int node)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		if (hmm_rs_page_node(buf + i * ps) != node)
			return i;
	return -1;
}

static char *anon(unsigned long n)
{
	char *p = mmap(NULL, n * ps, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Small pages, unless a test asks for a huge one. */
	madvise(p, n * ps, MADV_NOHUGEPAGE);
	return p;
}

TEST(nodes)
{
	struct hmm_rs_migrate m;
	uint32_t bad[] = { 2, 1024, UINT32_MAX };
	uint8_t st[1];
	unsigned int i;
	char *buf;
	int fd;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, fd);
	buf = anon(1);
	ASSERT_NE(NULL, buf);
	fill(buf, 1, 0);
	ASSERT_EQ(0, hmm_rs_place(buf, 1, ps, 1))
		TH_LOG("node 1: the guest has one node (scripts/run-vm.sh gives it two)");
	ASSERT_EQ(0, hmm_rs_migrate_node(fd, buf, 1, st, HMM_RS_SELECT_SYSTEM,
					 0, 0, &m));
	ASSERT_EQ(1, m.migrated);
	ASSERT_EQ(0, hmm_rs_page_node(buf));
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		uint32_t node = bad[i];

		ASSERT_EQ(-ENODEV, hmm_rs_migrate_node(fd, buf, 1, st,
						       HMM_RS_SELECT_SYSTEM, 0,
						       node, &m))
			TH_LOG("node %u", node);
	}
	ASSERT_EQ(0, hmm_rs_page_node(buf));
	munmap(buf, ps);
	close(fd);
}

FIXTURE(s2s)
{
	int fd;
	char *buf;
	uint8_t st[NPAGES];
};

FIXTURE_VARIANT(s2s)
{
	int from, to;
};

FIXTURE_VARIANT_ADD(s2s, 0_to_1) { .from = 0, .to = 1 };
FIXTURE_VARIANT_ADD(s2s, 1_to_0) { .from = 1, .to = 0 };

FIXTURE_SETUP(s2s)
{
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
	fill(self->buf, NPAGES, 3);
	ASSERT_EQ(0, hmm_rs_place(self->buf, NPAGES, ps, variant->from));
	memset(self->st, 0xee, sizeof(self->st));
}

FIXTURE_TEARDOWN(s2s)
{
	munmap(self->buf, NPAGES * ps);
	close(self->fd);
}

/* The first of @n status bytes from @from on that is not @want, else -1. */
static long bad_status(const uint8_t *st, unsigned long from, unsigned long n,
		       uint8_t want)
{
	unsigned long i;

	for (i = from; i < from + n; i++)
		if (st[i] != want) {
			printf("# page %lu: status %#x (%s), want %#x\n",
			       i, st[i],
			       hmm_rs_reason_name(st[i] & HMM_RS_STATUS_REASON),
			       want);
			return i;
		}
	return -1;
}

#define ASSERT_STATUS(st, from, n, want) \
	ASSERT_EQ(-1, bad_status((st), (from), (n), (want)))

TEST_F(s2s, moves)
{
	struct hmm_rs_migrate m;

	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_EQ(NPAGES, m.migrated);
	ASSERT_EQ(NPAGES, m.counts[HMM_RS_MIGRATED]);
	ASSERT_STATUS(self->st, 0, NPAGES, HMM_RS_MIGRATED);
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, variant->to));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 3));
}

TEST_F(s2s, not_on_node)
{
	struct hmm_rs_migrate m;
	const unsigned long half = NPAGES / 2;

	/* The first half is already on the target node. */
	ASSERT_EQ(0, hmm_rs_place(self->buf, half, ps, variant->to));
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM,
					 HMM_RS_REQ_NOT_ON_NODE, variant->to,
					 &m));
	ASSERT_EQ(NPAGES - half, m.migrated);
	ASSERT_EQ(half, m.counts[HMM_RS_ON_NODE]);
	ASSERT_STATUS(self->st, 0, half, HMM_RS_ON_NODE);
	ASSERT_STATUS(self->st, half, NPAGES - half, HMM_RS_MIGRATED);
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, variant->to));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 3));

	/* Without the filter, every page gets a new one on the node. */
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_EQ(NPAGES, m.migrated);
	ASSERT_STATUS(self->st, 0, NPAGES, HMM_RS_MIGRATED);
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, variant->to));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 3));
}

TEST_F(s2s, holes_and_zero)
{
	struct hmm_rs_migrate m;
	const unsigned long q = NPAGES / 4;
	unsigned long i;
	char *buf;

	/* A fresh buffer: holes, then zero pages (read), then written pages. */
	buf = anon(NPAGES);
	ASSERT_NE(NULL, buf);
	for (i = q; i < 2 * q; i++)
		(void)__atomic_load_n(&buf[i * ps], __ATOMIC_RELAXED);
	fill(buf + 2 * q * ps, NPAGES - 2 * q, 5);
	ASSERT_EQ(0, hmm_rs_place(buf + 2 * q * ps, NPAGES - 2 * q, ps,
				  variant->from));
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, buf, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_STATUS(self->st, 0, q, HMM_RS_NOT_PRESENT);
	ASSERT_STATUS(self->st, q, q, HMM_RS_ZERO_PAGE);
	ASSERT_STATUS(self->st, 2 * q, NPAGES - 2 * q, HMM_RS_MIGRATED);
	ASSERT_EQ(q, m.counts[HMM_RS_NOT_PRESENT]);
	ASSERT_EQ(q, m.counts[HMM_RS_ZERO_PAGE]);
	ASSERT_EQ(NPAGES - 2 * q, m.migrated);
	/* Nothing was populated: no page at the holes, none but the zero page. */
	for (i = 0; i < 2 * q; i++) {
		int node = hmm_rs_page_node(buf + i * ps);

		ASSERT_GT(0, node) TH_LOG("page %lu: on node %d", i, node);
		if (i < q)
			ASSERT_EQ(-ENOENT, node) TH_LOG("page %lu", i);
	}
	ASSERT_EQ(-1, off_node(buf + 2 * q * ps, NPAGES - 2 * q, variant->to));
	for (i = 0; i < 2 * q; i++)
		ASSERT_EQ(0, buf[i * ps + 100]);
	munmap(buf, NPAGES * ps);
}

TEST_F(s2s, no_memory)
{
	struct hmm_rs_migrate m;

	/* The device's next allocation fails: here, the first page's on the node. */
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_FLAGS, 0, NULL,
				HMM_DMIRROR_FLAG_FAIL_ALLOC, NULL));
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_EQ(NPAGES - 1, m.migrated);
	ASSERT_EQ(1, m.counts[HMM_RS_NO_MEMORY]);
	ASSERT_STATUS(self->st, 0, 1, HMM_RS_NO_MEMORY | HMM_RS_STATUS_RETRY);
	ASSERT_STATUS(self->st, 1, NPAGES - 1, HMM_RS_MIGRATED);
	ASSERT_EQ(variant->from, hmm_rs_page_node(self->buf));
	/* The retry the status advises moves it. */
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, 1, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_STATUS(self->st, 0, 1, HMM_RS_MIGRATED);
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, variant->to));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 3));
}

/*
 * A huge page on the source node, one of its pages all zeroes, moved to
 * the target with @flags: each page's status @want, and still huge after
 * if @whole. Split, the zero-filled page becomes the shared zero page
 * (7.3's THP split maps such pages to it: TTU_USE_SHARED_ZEROPAGE), which
 * is not moved: ZERO_PAGE.
 */
static void thp_move(struct __test_metadata *_metadata, int fd, int from,
		     int to, uint32_t flags, uint8_t want, bool whole)
{
	const unsigned long size = 2UL << 20, n = size / ps, zero = 5;
	struct hmm_rs_migrate m;
	uint8_t *st = malloc(n);
	char *buf;

	ASSERT_NE(NULL, st);
	buf = hmm_rs_huge_map(size);
	ASSERT_NE(NULL, buf);
	fill(buf, n, 9);
	memset(buf + zero * ps, 0, ps);
	if (hmm_rs_anon_huge_kb(buf) < (long)(size >> 10))
		madvise(buf, size, MADV_COLLAPSE);
	ASSERT_EQ(size >> 10, hmm_rs_anon_huge_kb(buf)) TH_LOG("no THP for the buffer");
	ASSERT_EQ(0, hmm_rs_place(buf, n, ps, from));
	ASSERT_EQ(size >> 10, hmm_rs_anon_huge_kb(buf)) TH_LOG("move_pages split it");

	ASSERT_EQ(0, hmm_rs_migrate_node(fd, buf, n, st, HMM_RS_SELECT_SYSTEM,
					 flags, to, &m));
	ASSERT_STATUS(st, 0, zero, want);
	ASSERT_STATUS(st, zero, 1, whole ? want : HMM_RS_ZERO_PAGE);
	ASSERT_STATUS(st, zero + 1, n - zero - 1, want);
	ASSERT_EQ(whole ? n : n - 1, m.migrated);
	ASSERT_EQ(whole ? (long)(size >> 10) : 0, hmm_rs_anon_huge_kb(buf));
	ASSERT_EQ(-1, off_node(buf, zero, to));
	ASSERT_EQ(-1, off_node(buf + (zero + 1) * ps, n - zero - 1, to));
	if (whole)
		ASSERT_EQ(to, hmm_rs_page_node(buf + zero * ps));
	ASSERT_EQ(-1, bad_page_but(buf, n, 9, zero));
	munmap(buf, size);
	free(st);
}

/*
 * A huge page already on the target node, with the filter and without
 * HMM_RS_REQ_THP: it stays whole (ON_NODE|WHOLE, still one huge page).
 */
TEST_F(s2s, thp_kept_whole)
{
	const unsigned long size = 2UL << 20, n = size / ps;
	struct hmm_rs_migrate m;
	uint8_t *st = malloc(n);
	char *buf;

	ASSERT_NE(NULL, st);
	buf = hmm_rs_huge_map(size);
	ASSERT_NE(NULL, buf);
	fill(buf, n, 8);
	memset(buf + 3 * ps, 0, ps);
	if (hmm_rs_anon_huge_kb(buf) < (long)(size >> 10))
		madvise(buf, size, MADV_COLLAPSE);
	ASSERT_EQ(0, hmm_rs_place(buf, n, ps, variant->to));
	ASSERT_EQ(size >> 10, hmm_rs_anon_huge_kb(buf))
		TH_LOG("no THP on node %d", variant->to);
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, buf, n, st,
					 HMM_RS_SELECT_SYSTEM,
					 HMM_RS_REQ_NOT_ON_NODE, variant->to,
					 &m));
	ASSERT_STATUS(st, 0, n, HMM_RS_ON_NODE | HMM_RS_STATUS_WHOLE);
	ASSERT_EQ(0, m.migrated);
	ASSERT_EQ(size >> 10, hmm_rs_anon_huge_kb(buf));
	ASSERT_EQ(-1, off_node(buf, n, variant->to));
	ASSERT_EQ(-1, bad_page_but(buf, n, 8, 3));
	munmap(buf, size);
	free(st);
}

/*
 * Pages of a file stay where they are (7.3's migrate_vma_pages() would
 * move a file folio to system memory without its mapping's migrate_folio,
 * and BUG on one under writeback): FILE_BACKED, data and node unchanged.
 */
TEST_F(s2s, file_backed)
{
	struct hmm_rs_migrate m;
	int mfd = memfd_create("hmm_rs_numa", 0);
	char *f;

	ASSERT_LE(0, mfd);
	ASSERT_EQ(0, ftruncate(mfd, NPAGES * ps));
	f = mmap(NULL, NPAGES * ps, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	ASSERT_NE(MAP_FAILED, f);
	fill(f, NPAGES, 2);
	ASSERT_EQ(0, hmm_rs_place(f, NPAGES, ps, variant->from));
	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, f, NPAGES, self->st,
					 HMM_RS_SELECT_SYSTEM, 0, variant->to,
					 &m));
	ASSERT_STATUS(self->st, 0, NPAGES, HMM_RS_FILE_BACKED);
	ASSERT_EQ(0, m.migrated);
	ASSERT_EQ(-1, off_node(f, NPAGES, variant->from));
	ASSERT_EQ(-1, bad_page(f, NPAGES, 2));
	munmap(f, NPAGES * ps);
	close(mfd);
}

TEST_F(s2s, thp_whole)
{
	thp_move(_metadata, self->fd, variant->from, variant->to,
		 HMM_RS_REQ_THP, HMM_RS_MIGRATED | HMM_RS_STATUS_WHOLE, true);
}

TEST_F(s2s, thp_split)
{
	thp_move(_metadata, self->fd, variant->from, variant->to, 0,
		 HMM_RS_MIGRATED, false);
}

FIXTURE(d2node)
{
	int fd;
	char *buf;
	uint8_t st[NPAGES];
};

FIXTURE_VARIANT(d2node)
{
	const char *dev;
	uint32_t select;
	int to;
};

FIXTURE_VARIANT_ADD(d2node, private_to_0)
{
	.dev = "/dev/hmm_dmirror0", .select = HMM_RS_SELECT_DEVICE_PRIVATE, .to = 0,
};

FIXTURE_VARIANT_ADD(d2node, private_to_1)
{
	.dev = "/dev/hmm_dmirror0", .select = HMM_RS_SELECT_DEVICE_PRIVATE, .to = 1,
};

FIXTURE_VARIANT_ADD(d2node, coherent_to_0)
{
	.dev = "/dev/hmm_dmirror2", .select = HMM_RS_SELECT_DEVICE_COHERENT, .to = 0,
};

FIXTURE_VARIANT_ADD(d2node, coherent_to_1)
{
	.dev = "/dev/hmm_dmirror2", .select = HMM_RS_SELECT_DEVICE_COHERENT, .to = 1,
};

FIXTURE_SETUP(d2node)
{
	struct hmm_rs_migrate m;

	self->fd = open(variant->dev, O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
	fill(self->buf, NPAGES, 4);
	ASSERT_EQ(0, hmm_rs_migrate(self->fd, self->buf, NPAGES, NULL,
				    HMM_RS_SELECT_SYSTEM, HMM_RS_DST_DEVICE, 0,
				    &m));
	ASSERT_EQ(NPAGES, m.migrated);
}

FIXTURE_TEARDOWN(d2node)
{
	munmap(self->buf, NPAGES * ps);
	close(self->fd);
}

TEST_F(d2node, moves)
{
	unsigned char snap[NPAGES];
	struct hmm_rs_migrate m;
	unsigned long i;

	ASSERT_EQ(0, hmm_rs_migrate_node(self->fd, self->buf, NPAGES, self->st,
					 variant->select, 0, variant->to, &m));
	ASSERT_EQ(NPAGES, m.migrated);
	ASSERT_STATUS(self->st, 0, NPAGES, HMM_RS_MIGRATED);
	/* Not on the device any more: the device sees system pages. */
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT,
				(uintptr_t)self->buf, snap, NPAGES, NULL));
	for (i = 0; i < NPAGES; i++) {
		unsigned char p = snap[i];

		ASSERT_EQ(0, p & 0xf0) TH_LOG("page %lu: %#x", i, p);
	}
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, variant->to));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 4));
}

FIXTURE(bad_input)
{
	int fd;
	char *buf;
	uint8_t st[NPAGES];
};

FIXTURE_VARIANT(bad_input)
{
	uint32_t select, dst, flags, node, reserved, src_dev;
	int err;
};

#define S2N .select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_NODE

FIXTURE_VARIANT_ADD(bad_input, node_2) { S2N, .node = 2, .err = ENODEV };
FIXTURE_VARIANT_ADD(bad_input, node_63) { S2N, .node = 63, .err = ENODEV };
FIXTURE_VARIANT_ADD(bad_input, node_64) { S2N, .node = 64, .err = ENODEV };
FIXTURE_VARIANT_ADD(bad_input, node_max) { S2N, .node = UINT32_MAX, .err = ENODEV };
FIXTURE_VARIANT_ADD(bad_input, node_int_max) { S2N, .node = INT32_MAX, .err = ENODEV };
FIXTURE_VARIANT_ADD(bad_input, reserved)
{
	S2N, .node = 1, .reserved = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, node_with_dst_system)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_SYSTEM,
	.node = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, node_with_dst_device)
{
	.select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_DEVICE, .node = 1,
	.err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, not_on_node_to_system)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_SYSTEM,
	.flags = HMM_RS_REQ_NOT_ON_NODE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, not_on_node_to_device)
{
	.select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_DEVICE,
	.flags = HMM_RS_REQ_NOT_ON_NODE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, not_on_node_without_system)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_NODE,
	.flags = HMM_RS_REQ_NOT_ON_NODE, .node = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, dst_3) { .select = HMM_RS_SELECT_SYSTEM, .dst = 3, .err = EINVAL };
FIXTURE_VARIANT_ADD(bad_input, flags_bit4) { S2N, .flags = 1 << 4, .node = 1, .err = EINVAL };
FIXTURE_VARIANT_ADD(bad_input, src_dev_with_system)
{
	.select = HMM_RS_SELECT_SYSTEM | HMM_RS_SELECT_DEVICE_PRIVATE,
	.dst = HMM_RS_DST_NODE, .flags = HMM_RS_REQ_SRC_DEV, .src_dev = 1,
	.node = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, thp_system_and_private)
{
	.select = HMM_RS_SELECT_SYSTEM | HMM_RS_SELECT_DEVICE_PRIVATE,
	.dst = HMM_RS_DST_NODE, .flags = HMM_RS_REQ_THP, .node = 1,
	.err = EINVAL,
};

FIXTURE_SETUP(bad_input)
{
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
	fill(self->buf, NPAGES, 6);
	ASSERT_EQ(0, hmm_rs_place(self->buf, NPAGES, ps, 0));
	memset(self->st, 0xee, sizeof(self->st));
}

FIXTURE_TEARDOWN(bad_input)
{
	munmap(self->buf, NPAGES * ps);
	close(self->fd);
}

TEST_F(bad_input, refused)
{
	struct hmm_rs_migrate m = {
		.addr = (uintptr_t)self->buf,
		.npages = NPAGES,
		.status = (uintptr_t)self->st,
		.select = variant->select,
		.dst = variant->dst,
		.flags = variant->flags,
		.node = variant->node,
		.reserved = variant->reserved,
		.src_dev = variant->src_dev,
	};

	ASSERT_EQ(-1, ioctl(self->fd, HMM_RS_MIGRATE, &m));
	ASSERT_EQ(variant->err, errno);
	ASSERT_STATUS(self->st, 0, NPAGES, 0xee);
	ASSERT_EQ(-1, off_node(self->buf, NPAGES, 0));
	ASSERT_EQ(-1, bad_page(self->buf, NPAGES, 6));
}

TEST_HARNESS_MAIN
