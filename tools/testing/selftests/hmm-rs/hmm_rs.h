/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the hmm-rs kselftests.
 */
#ifndef HMM_RS_SELFTESTS_H
#define HMM_RS_SELFTESTS_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <sys/syscall.h>

#include "lib/test_hmm_uapi.h"
#include "uapi/hmm_rs.h"

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

/*
 * HMM_RS_MIGRATE of @npages pages at @addr through @fd to @dst (@node for
 * HMM_RS_DST_NODE), with status array @status (NULL: none). Returns 0 or
 * -errno; the command as the kernel left it in @m.
 */
static inline int hmm_rs_migrate_to(int fd, void *addr, uint64_t npages,
				    uint8_t *status, uint32_t select,
				    uint32_t dst, uint32_t flags, uint32_t node,
				    struct hmm_rs_migrate *m)
{
	*m = (struct hmm_rs_migrate){
		.addr = (uintptr_t)addr,
		.npages = npages,
		.status = (uintptr_t)status,
		.select = select,
		.dst = dst,
		.flags = flags,
		.node = node,
	};
	return ioctl(fd, HMM_RS_MIGRATE, m) ? -errno : 0;
}

/* HMM_RS_MIGRATE to the device or to system memory. */
static inline int hmm_rs_migrate(int fd, void *addr, uint64_t npages,
				 uint8_t *status, uint32_t select,
				 uint32_t dst, uint32_t flags,
				 struct hmm_rs_migrate *m)
{
	return hmm_rs_migrate_to(fd, addr, npages, status, select, dst, flags,
				 0, m);
}

/* HMM_RS_MIGRATE to NUMA node @node (HMM_RS_DST_NODE). */
static inline int hmm_rs_migrate_node(int fd, void *addr, uint64_t npages,
				      uint8_t *status, uint32_t select,
				      uint32_t flags, uint32_t node,
				      struct hmm_rs_migrate *m)
{
	return hmm_rs_migrate_to(fd, addr, npages, status, select,
				 HMM_RS_DST_NODE, flags, node, m);
}

/* move_pages(2)'s MPOL_MF_MOVE (linux/mempolicy.h, not in every libc). */
#define HMM_RS_MPOL_MF_MOVE (1 << 1)

/*
 * The NUMA node of the page at @addr, by move_pages(2) with no target:
 * a node, or -errno (-ENOENT: nothing present, a device-private page
 * among them; -EFAULT: the zero page).
 */
static inline int hmm_rs_page_node(const void *addr)
{
	void *pages[1] = { (void *)addr };
	int status = -1;

	if (syscall(SYS_move_pages, 0, 1UL, pages, NULL, &status, 0))
		return -errno;
	return status;
}

/*
 * Puts the @n pages at @addr on @node with move_pages(2), the kernel's own
 * way, to set a test up. Returns 0 if each of them is there afterwards
 * (asked again: move_pages(2) answers -EBUSY for the other pages of a huge
 * page it moves whole).
 */
static inline int hmm_rs_place(char *addr, unsigned long n, long page_size,
			       int node)
{
	void *pages[n];
	int nodes[n], status[n];
	unsigned long i;

	for (i = 0; i < n; i++) {
		pages[i] = addr + i * page_size;
		nodes[i] = node;
	}
	if (syscall(SYS_move_pages, 0, n, pages, nodes, status,
		    HMM_RS_MPOL_MF_MOVE))
		return -errno;
	if (syscall(SYS_move_pages, 0, n, pages, NULL, status, 0))
		return -errno;
	for (i = 0; i < n; i++)
		if (status[i] != node) {
			printf("# move_pages: page %lu of %lu: %d, not node %d\n",
			       i, n, status[i], node);
			return -EAGAIN;
		}
	return 0;
}

/*
 * The NUMA nodes of the @n pages from @addr, by move_pages(2) with no
 * target, into @nodes: each a node, or -errno as hmm_rs_page_node() gives
 * it. Returns 0 or -errno.
 */
static inline int hmm_rs_pages_nodes(const char *addr, unsigned long n,
				     long page_size, int *nodes)
{
	void *pages[n];
	unsigned long i;

	for (i = 0; i < n; i++) {
		pages[i] = (void *)(addr + i * page_size);
		nodes[i] = INT32_MIN;
	}
	if (syscall(SYS_move_pages, 0, n, pages, NULL, nodes, 0))
		return -errno;
	return 0;
}

/*
 * The nodes with memory, the ones HMM_RS_DST_NODE takes, as a list such
 * as "0-1" (/sys/devices/system/node/has_memory) into @list; "0" if that
 * cannot be read (a kernel without NUMA).
 */
static inline void hmm_rs_memory_nodes(char *list, size_t size)
{
	FILE *f = fopen("/sys/devices/system/node/has_memory", "r");

	if (!f || !fgets(list, size, f))
		snprintf(list, size, "0");
	if (f)
		fclose(f);
	list[strcspn(list, "\n")] = 0;
}

/* Whether node @nid is in @list, as hmm_rs_memory_nodes() gives it. */
static inline int hmm_rs_node_in(const char *list, uint64_t nid)
{
	const char *p = list;
	char *end;

	while (*p) {
		unsigned long a = strtoul(p, &end, 10), b = a;

		if (end == p)
			break;
		if (*end == '-')
			b = strtoul(end + 1, &end, 10);
		if (nid >= a && nid <= b)
			return 1;
		if (*end != ',')
			break;
		p = end + 1;
	}
	return 0;
}

/* The name of HMM_RS_MIGRATE's reason @r, NULL if it has none. */
static inline const char *hmm_rs_reason_name(unsigned int r)
{
	static const char *const names[HMM_RS_NR_REASONS] = {
		[HMM_RS_MIGRATED] = "MIGRATED",
		[HMM_RS_NOT_PRESENT] = "NOT_PRESENT",
		[HMM_RS_ZERO_PAGE] = "ZERO_PAGE",
		[HMM_RS_NOT_SELECTED] = "NOT_SELECTED",
		[HMM_RS_OTHER_OWNER] = "OTHER_OWNER",
		[HMM_RS_PINNED] = "PINNED",
		[HMM_RS_BUSY] = "BUSY",
		[HMM_RS_SPLIT_FAILED] = "SPLIT_FAILED",
		[HMM_RS_NO_DESTINATION] = "NO_DESTINATION",
		[HMM_RS_NO_MEMORY] = "NO_MEMORY",
		[HMM_RS_REFUSED] = "REFUSED",
		[HMM_RS_FILE_BACKED] = "FILE_BACKED",
		[HMM_RS_UNSUPPORTED] = "UNSUPPORTED",
		[HMM_RS_ON_NODE] = "ON_NODE",
	};

	if (r == HMM_RS_NOT_REACHED)
		return "NOT_REACHED";
	return r < HMM_RS_NR_REASONS ? names[r] : NULL;
}

/* Whether THP is possible with MADV_HUGEPAGE: transparent_hugepage/enabled not never. */
static inline bool hmm_rs_thp_enabled(void)
{
	char line[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	return line[0] && !strstr(line, "[never]");
}

/* AnonHugePages of the mapping at @p, in kB (/proc/self/smaps); -1: none. */
static inline long hmm_rs_anon_huge_kb(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long a, b;
	char line[256];
	bool in = false;
	long kb = -1;

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
			in = a <= (uintptr_t)p && (uintptr_t)p < b;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kb;
}

/*
 * A private anonymous VMA of exactly @size bytes (a huge page's), aligned
 * to @size, so that its smaps are its huge page's, with MADV_HUGEPAGE;
 * NULL on failure.
 */
static inline char *hmm_rs_huge_map(size_t size)
{
	char *map = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *buf;

	if (map == MAP_FAILED)
		return NULL;
	buf = (char *)(((uintptr_t)map + size - 1) & ~(size - 1));
	if (buf > map)
		munmap(map, buf - map);
	if (map + 2 * size > buf + size)
		munmap(buf + size, map + size - buf);
	if (madvise(buf, size, MADV_HUGEPAGE)) {
		munmap(buf, size);
		return NULL;
	}
	return buf;
}

/* The RAM disk (CONFIG_BLK_DEV_RAM) the tests swap to. */
#define HMM_RS_SWAP_DEV "/dev/ram0"

/*
 * Writes a version 1 swap header to HMM_RS_SWAP_DEV and swaps to it (no
 * mkswap needed). Returns 0, or -1 with errno set.
 */
static inline int hmm_rs_swapon(void)
{
	long page_size = sysconf(_SC_PAGESIZE);
	char *hdr = calloc(1, page_size);
	uint32_t *words = (uint32_t *)(hdr + 1024);
	off_t size;
	int fd, ret = -1;

	if (!hdr)
		return -1;
	fd = open(HMM_RS_SWAP_DEV, O_RDWR);
	if (fd < 0)
		goto out;
	size = lseek(fd, 0, SEEK_END);
	words[0] = 1;				/* version */
	words[1] = size / page_size - 1;	/* last_page */
	memcpy(hdr + page_size - 10, "SWAPSPACE2", 10);
	if (size > page_size && pwrite(fd, hdr, page_size, 0) == page_size)
		ret = swapon(HMM_RS_SWAP_DEV, 0);
	close(fd);
out:
	free(hdr);
	return ret;
}

/* Whether the page at @addr is swapped out, per /proc/self/pagemap. */
static inline int hmm_rs_swapped(const void *addr, long page_size)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return -1;
	if (pread(fd, &e, sizeof(e),
		  (uintptr_t)addr / page_size * sizeof(e)) != sizeof(e))
		e = 0;
	close(fd);
	return !!(e & (1ULL << 62));
}

#endif /* HMM_RS_SELFTESTS_H */
