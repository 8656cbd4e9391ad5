// SPDX-License-Identifier: GPL-2.0
/*
 * The make run demo of HMM_RS_MIGRATE (include/uapi/hmm_rs.h): a buffer of
 * mixed pages is moved to /dev/hmm_dmirror0, and a map of the buffer, one
 * character per page, is printed before and after, with the reason for
 * every page that stayed. Then the same with HMM_RS_REQ_FAULT; then all of
 * it to NUMA node 1 (HMM_RS_DST_NODE), twice, the second time with the
 * "not already on node X" filter; then a transparent huge page, to the
 * device and to node 1, whole.
 *
 * Map: 0/1 system memory on that node, A/B device 0/1, z the zero page,
 * ~ swapped out, . nothing mapped.
 *
 * Pages: 4 written on node 0, 4 on node 1, 2 never touched, 2 read only
 * (the zero page), 2 pinned (gup_test), 2 in a pipe (vmsplice), 4 swapped
 * out (if the kernel has swap), 4 on the other device. It is also a test:
 * each page must end where, and with the reason, this file says.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"
#include "mm/gup_test.h"
#include "uapi/hmm_rs.h"

#define NPAGES 24
#define THP (2UL << 20)

/*
 * One character per page of @buf: where it is, as the map says. A device
 * sees only its own device-private pages: @fd[d] is device d's file.
 */
static void map(const int *fd, char *buf, long ps, char *out)
{
	unsigned char snap[NPAGES], snap1[NPAGES];
	struct hmm_dmirror_cmd c;
	void *pages[NPAGES];
	int node[NPAGES], i;

	for (i = 0; i < NPAGES; i++)
		pages[i] = buf + i * ps;
	if (hmm_rs_cmd(fd[0], HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, snap,
		       NPAGES, &c))
		memset(snap, 0, sizeof(snap));
	if (hmm_rs_cmd(fd[1], HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, snap1,
		       NPAGES, &c))
		memset(snap1, 0, sizeof(snap1));
	if (syscall(SYS_move_pages, 0, NPAGES, pages, NULL, node, 0))
		memset(node, 0xff, sizeof(node));
	for (i = 0; i < NPAGES; i++) {
		/* The kind of page is the high nibble, access the low. */
		unsigned char s = snap[i] & 0xf0;

		if (s == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL)
			out[i] = 'A';
		else if ((snap1[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL)
			out[i] = 'B';
		else if (s == HMM_DMIRROR_PROT_ZERO)
			out[i] = 'z';
		else if (hmm_rs_swapped(pages[i], ps) == 1)
			out[i] = '~';
		else if (snap[i] & (HMM_DMIRROR_PROT_READ |
				    HMM_DMIRROR_PROT_WRITE))
			out[i] = node[i] >= 0 && node[i] < 10 ? '0' + node[i] : 's';
		else
			out[i] = '.';
	}
	out[NPAGES] = '\0';
}

/* Prints the pages that stayed, runs of one reason together. */
static void print_reasons(const uint8_t *st)
{
	int i = 0, j;

	while (i < NPAGES) {
		uint8_t r = st[i] & HMM_RS_STATUS_REASON;

		for (j = i; j < NPAGES && st[j] == st[i]; j++)
			;
		if (r != HMM_RS_MIGRATED)
			ksft_print_msg("  pages %2d-%2d: %s%s\n", i, j - 1,
				       hmm_rs_reason_name(r) ?: "?",
				       st[i] & HMM_RS_STATUS_RETRY ?
				       " (a retry can help)" : "");
		i = j;
	}
}

/* The huge page of @buf (@n pages): where it is, and whether it is huge. */
static void thp_map(int fd, char *buf, unsigned long n, char *out, size_t len)
{
	long kb = hmm_rs_anon_huge_kb(buf);
	unsigned char snap[1];

	if (!hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, snap, 1,
			NULL) &&
	    (snap[0] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL) {
		snprintf(out, len, "%lu pages on device 0", n);
		return;
	}
	snprintf(out, len, "%lu pages on node %d, %s", n,
		 hmm_rs_page_node(buf), kb > 0 ? "one huge page" : "split");
}

/* Whether each of @n pages moved as part of a huge page moved whole. */
static bool all_whole(const uint8_t *st, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		if (st[i] != (HMM_RS_MIGRATED | HMM_RS_STATUS_WHOLE))
			return false;
	return true;
}

/* The whole buffer from system memory to the device of @fd. */
static int migrate(int fd, char *buf, uint8_t *st, uint32_t flags,
		   struct hmm_rs_migrate *m)
{
	return hmm_rs_migrate(fd, buf, NPAGES, st, HMM_RS_SELECT_SYSTEM,
			      HMM_RS_DST_DEVICE, flags, m);
}

TEST(demo)
{
	long ps = sysconf(_SC_PAGESIZE);
	int fd[2], gup, pipefd[2], swap, i;
	struct pin_longterm_test pin;
	struct hmm_rs_migrate m;
	struct iovec iov;
	uint8_t st[NPAGES];
	char before[NPAGES + 1], after[NPAGES + 1];
	static char copy[4 << 12];
	char before_thp[80], after_thp[80];
	static uint8_t thp_st[THP / 4096];
	const char *want;
	char *buf;
	char x;

	fd[0] = open("/dev/hmm_dmirror0", O_RDWR);
	fd[1] = open("/dev/hmm_dmirror1", O_RDWR);
	ASSERT_LE(0, fd[0]);
	ASSERT_LE(0, fd[1]);
	buf = mmap(NULL, NPAGES * ps, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	ASSERT_EQ(0, madvise(buf, NPAGES * ps, MADV_NOHUGEPAGE));

	/* 0-7 written, 4-7 on node 1; 8-9 untouched; 10-11 read (zero page). */
	for (i = 0; i < 8; i++)
		memset(buf + i * ps, i + 1, ps);
	ASSERT_EQ(0, hmm_rs_place(buf, 4, ps, 0));
	ASSERT_EQ(0, hmm_rs_place(buf + 4 * ps, 4, ps, 1));
	/* Read, not written: the zero page. */
	x = __atomic_load_n(&buf[10 * ps], __ATOMIC_RELAXED) +
	    __atomic_load_n(&buf[11 * ps], __ATOMIC_RELAXED);
	(void)x;
	/* 12-13 pinned; 14-15 referenced by a pipe. */
	for (i = 12; i < 24; i++)
		memset(buf + i * ps, i + 1, ps);
	gup = open("/sys/kernel/debug/gup_test", O_RDWR);
	ASSERT_LE(0, gup);
	pin = (struct pin_longterm_test){ (uintptr_t)(buf + 12 * ps), 2 * ps,
					  PIN_LONGTERM_TEST_FLAG_USE_WRITE };
	ASSERT_EQ(0, ioctl(gup, PIN_LONGTERM_TEST_START, &pin));
	ASSERT_EQ(0, pipe(pipefd));
	iov = (struct iovec){ buf + 14 * ps, 2 * ps };
	ASSERT_EQ(2 * ps, vmsplice(pipefd[1], &iov, 1, 0));
	/* 16-19 swapped out, if there is swap. */
	swap = hmm_rs_swapon() == 0;
	if (swap)
		ASSERT_EQ(0, madvise(buf + 16 * ps, 4 * ps, MADV_PAGEOUT));
	/* 20-23 on the other device. */
	ASSERT_EQ(0, hmm_rs_cmd(fd[1], HMM_DMIRROR_MIGRATE_TO_DEV,
				(uintptr_t)(buf + 20 * ps), copy, 4, NULL));

	map(fd, buf, ps, before);
	EXPECT_STREQ(swap ? "00001111..zz0000~~~~BBBB" : "00001111..zz00000000BBBB",
		     before);
	ASSERT_EQ(0, migrate(fd[0], buf, st, 0, &m));
	map(fd, buf, ps, after);
	ksft_print_msg("HMM_RS_MIGRATE system memory -> /dev/hmm_dmirror0\n");
	ksft_print_msg("  before: %s\n", before);
	ksft_print_msg("  after:  %s   (%llu of %d pages moved)\n", after,
		       (unsigned long long)m.migrated, NPAGES);
	print_reasons(st);
	want = swap ? "AAAAAAAAAAAA0000~~~~BBBB" : "AAAAAAAAAAAA00000000BBBB";
	EXPECT_STREQ(want, after);

	/* Again, faulting in what is not present: swap and device 1. */
	map(fd, buf, ps, before);
	ASSERT_EQ(0, migrate(fd[0], buf, st, HMM_RS_REQ_FAULT, &m));
	map(fd, buf, ps, after);
	ksft_print_msg("the same with HMM_RS_REQ_FAULT\n");
	ksft_print_msg("  before: %s\n", before);
	ksft_print_msg("  after:  %s   (%llu more moved)\n", after,
		       (unsigned long long)m.migrated);
	print_reasons(st);
	EXPECT_STREQ("AAAAAAAAAAAA0000AAAAAAAA", after);
	for (i = 12; i < 14; i++)
		EXPECT_EQ(HMM_RS_PINNED, st[i]);
	for (i = 14; i < 16; i++)
		EXPECT_EQ(HMM_RS_BUSY | HMM_RS_STATUS_RETRY, st[i]);

	ioctl(gup, PIN_LONGTERM_TEST_STOP);
	close(gup);
	close(pipefd[0]);
	close(pipefd[1]);

	/* Unpinned and out of the pipe, all of it to node 1, twice. */
	map(fd, buf, ps, before);
	ASSERT_EQ(0, hmm_rs_migrate_node(fd[0], buf, NPAGES, st,
					 HMM_RS_SELECT_ALL,
					 HMM_RS_REQ_NOT_ON_NODE, 1, &m));
	map(fd, buf, ps, after);
	ksft_print_msg("everything -> node 1 (HMM_RS_DST_NODE, not already there)\n");
	ksft_print_msg("  before: %s\n", before);
	ksft_print_msg("  after:  %s   (%llu moved)\n", after,
		       (unsigned long long)m.migrated);
	print_reasons(st);
	EXPECT_STREQ("111111111111111111111111", after);
	ASSERT_EQ(0, hmm_rs_migrate_node(fd[0], buf, NPAGES, st,
					 HMM_RS_SELECT_ALL,
					 HMM_RS_REQ_NOT_ON_NODE, 1, &m));
	map(fd, buf, ps, before);
	ksft_print_msg("the same again: nothing to do\n");
	ksft_print_msg("  after:  %s   (%llu moved)\n", before,
		       (unsigned long long)m.migrated);
	print_reasons(st);
	EXPECT_EQ(NPAGES, m.counts[HMM_RS_ON_NODE]);
	/* Every page's data is where the CPU reads it. */
	for (i = 0; i < NPAGES; i++) {
		char v = buf[i * ps + ps - 1];
		char w = (i == 8 || i == 9 || i == 10 || i == 11) ? 0 : i + 1;

		EXPECT_EQ(w, v) TH_LOG("page %d", i);
	}
	if (swap)
		swapoff(HMM_RS_SWAP_DEV);
	munmap(buf, NPAGES * ps);

	/* A transparent huge page, whole to node 1, then to the device. */
	buf = hmm_rs_huge_map(THP);
	ASSERT_NE(NULL, buf);
	memset(buf, 7, THP);
	ASSERT_EQ(0, hmm_rs_place(buf, THP / ps, ps, 0));
	thp_map(fd[0], buf, THP / ps, before_thp, sizeof(before_thp));
	ASSERT_EQ(0, hmm_rs_migrate_node(fd[0], buf, THP / ps, thp_st,
					 HMM_RS_SELECT_SYSTEM, HMM_RS_REQ_THP,
					 1, &m));
	EXPECT_EQ(THP / ps, m.migrated);
	thp_map(fd[0], buf, THP / ps, after_thp, sizeof(after_thp));
	ksft_print_msg("a huge page -> node 1 (HMM_RS_REQ_THP)\n");
	ksft_print_msg("  before: %s\n", before_thp);
	ksft_print_msg("  after:  %s, moved whole: %s\n", after_thp,
		       all_whole(thp_st, THP / ps) ? "yes" : "no");
	EXPECT_STREQ("512 pages on node 1, one huge page", after_thp);
	EXPECT_TRUE(all_whole(thp_st, THP / ps));
	ASSERT_EQ(0, hmm_rs_migrate(fd[0], buf, THP / ps, thp_st,
				    HMM_RS_SELECT_SYSTEM, HMM_RS_DST_DEVICE,
				    HMM_RS_REQ_THP, &m));
	EXPECT_EQ(THP / ps, m.migrated);
	thp_map(fd[0], buf, THP / ps, after_thp, sizeof(after_thp));
	ksft_print_msg("and -> /dev/hmm_dmirror0 (HMM_RS_REQ_THP)\n");
	ksft_print_msg("  after:  %s, moved whole: %s\n", after_thp,
		       all_whole(thp_st, THP / ps) ? "yes" : "no");
	EXPECT_STREQ("512 pages on device 0", after_thp);
	EXPECT_TRUE(all_whole(thp_st, THP / ps));
	EXPECT_EQ(7, buf[THP - 1]);
	munmap(buf, THP);
	close(fd[0]);
	close(fd[1]);
}

TEST_HARNESS_MAIN
