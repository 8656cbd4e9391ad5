// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs matrix kselftest: HMM_RS_MIGRATE (include/uapi/hmm_rs.h), every
 * cell of select flags x owner x page kind x destination, the matrix the
 * July 2020 review of migrate_vma's select flags asked for: which pages
 * migrate, and the reason for each other one.
 *
 * Rows, the page kinds, side by side in one range of three VMAs (each
 * kind PAGES_PER_KIND pages, the THP 512 pages counted as one row):
 *   hole     anonymous, never touched
 *   zero     anonymous, read only: the shared zero page
 *   anon@0   anonymous, written, on node 0
 *   anon@1   anonymous, written, moved to node 1 with move_pages(2)
 *   file     a shared memfd mapping (its own VMA), written, on node 0
 *   swapped  anonymous, written, swapped out (MADV_PAGEOUT to /dev/ram0)
 *   priv0/1  on dmirror0 / dmirror1: device-private, two owners
 *   coh2/3   on dmirror2 / dmirror3: device-coherent, two more owners
 *   thp      a 2 MiB aligned VMA of its own holding one THP, on node 0
 *
 * Columns, one HMM_RS_MIGRATE each:
 *   the device the call goes through: dmirror0 (private), dmirror2
 *     (coherent);
 *   the owner of the device pages selected: its own (no SRC_DEV), another
 *     device's of the same kind, or of the other kind (HMM_RS_REQ_SRC_DEV:
 *     dmirror1 and dmirror2 through dmirror0, dmirror3 and dmirror0
 *     through dmirror2); system memory has no owner (the "none" of the
 *     review), which the rows cover;
 *   the selection: each of the 7 nonzero combinations of SYSTEM,
 *     DEVICE_PRIVATE and DEVICE_COHERENT, each without and with
 *     HMM_RS_REQ_THP (MIGRATE_VMA_SELECT_COMPOUND);
 *   the destination: DEVICE, SYSTEM, NODE 0, NODE 1, NODE 0 and 1 with
 *     HMM_RS_REQ_NOT_ON_NODE, and NODE 2 (no such node).
 *
 * matrix.<device>_to_<destination>.cells: one test per device and
 *   destination, over its 42 owner x selection columns. A column the uapi
 *   refuses (a selection the destination does not take, NOT_ON_NODE
 *   without SYSTEM: EINVAL; node 2: ENODEV) fails with that errno and
 *   changes nothing: the status array is not written, every page is where
 *   it was (and the same page frame), its data intact. Every other column
 *   gets a range set up afresh, and for each page: its status byte
 *   (reason, RETRY and WHOLE bits) is what expect() derives from the
 *   documented semantics; it is where it should be afterwards (a device,
 *   per the four devices' HMM_DMIRROR_SNAPSHOT; a node, per move_pages(2);
 *   swapped out, per /proc/self/pagemap; the zero page; nothing), a system
 *   page that moved on a new page frame and one that stayed on the same,
 *   the THP still PMD-mapped where it moved or stayed whole and split
 *   where it went page by page; its data, read back by the CPU, intact;
 *   and counts[] agree with the status bytes (and migrated with
 *   counts[MIGRATED]). A failure names its column and row.
 * matrix_summary.table: runs last and prints, as TAP comments, the
 *   outcomes per destination (rows: kinds; cells counted), the totals per
 *   reason (pages and cells), the cells the driver is known to get wrong
 *   (known_wrong[]) and the size of the matrix; it fails if a group did
 *   not run to its end.
 *
 * Expectations are written from include/uapi/hmm_rs.h and
 * Documentation/migrate-reasons.rst; a cell where the driver is known to
 * differ is listed in known_wrong[] with what it does instead, which is
 * asserted (so that a fix, or another change, fails the cell until the
 * list is updated).
 *
 * Runs with the module loaded with spm_addr_dev0/1 (dmirror2 and 3), two
 * NUMA nodes with memory, THP and swap on /dev/ram0; see scripts/plans/check.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"
#include "uapi/hmm_rs.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define NDEV		4
#define PAGES_PER_KIND	2

static const char *const devices[NDEV] = {
	"/dev/hmm_dmirror0", "/dev/hmm_dmirror1",
	"/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
};

static long ps;
static unsigned long hpage_pages;

static void __attribute__((constructor)) init_sizes(void)
{
	unsigned long size = 2UL << 20;
	FILE *f;

	ps = sysconf(_SC_PAGESIZE);
	f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
	if (f) {
		if (fscanf(f, "%lu", &size) != 1)
			size = 2UL << 20;
		fclose(f);
	}
	hpage_pages = size / ps;
}

/* ---- rows: the page kinds ----------------------------------------------- */

enum kind {
	K_HOLE, K_ZERO, K_ANON0, K_ANON1, K_FILE, K_SWAP,
	K_PRIV0, K_PRIV1, K_COH2, K_COH3, K_THP, NKINDS
};

static const char *const kind_names[NKINDS] = {
	"hole", "zero", "anon@0", "anon@1", "file", "swapped",
	"priv0", "priv1", "coh2", "coh3", "thp",
};

/*
 * The range: the THP's VMA, then the small anonymous pages' VMA (these
 * kinds in this order), then the memfd's.
 */
static const enum kind small_kinds[] = {
	K_HOLE, K_ZERO, K_ANON0, K_ANON1, K_SWAP,
	K_PRIV0, K_PRIV1, K_COH2, K_COH3,
};

#define NSMALL ARRAY_SIZE(small_kinds)

static unsigned long range_pages(void)
{
	return hpage_pages + (NSMALL + 1) * PAGES_PER_KIND;
}

/* The first page of kind @k in the range, and how many it has. */
static unsigned long kind_first(enum kind k)
{
	unsigned int i;

	if (k == K_THP)
		return 0;
	if (k == K_FILE)
		return hpage_pages + NSMALL * PAGES_PER_KIND;
	for (i = 0; i < NSMALL; i++)
		if (small_kinds[i] == k)
			break;
	return hpage_pages + i * PAGES_PER_KIND;
}

static unsigned long kind_pages(enum kind k)
{
	return k == K_THP ? hpage_pages : PAGES_PER_KIND;
}

/* ---- where a page is ---------------------------------------------------- */

enum loc {
	L_NONE,		/* nothing mapped */
	L_ZERO,		/* the shared zero page */
	L_NODE0, L_NODE1,
	L_SYS,		/* expectation only: system memory, either node */
	L_SWAP,		/* swapped out */
	L_DEV0, L_DEV1, L_DEV2, L_DEV3,
	L_OTHER,	/* anything else: an error entry, a third node */
};

static const char *const loc_names[] = {
	"nothing", "the zero page", "node 0", "node 1", "system memory",
	"swap", "dmirror0", "dmirror1", "dmirror2", "dmirror3", "elsewhere",
};

static bool on_node(enum loc l)
{
	return l == L_NODE0 || l == L_NODE1;
}

static bool loc_matches(enum loc got, enum loc want)
{
	return want == L_SYS ? on_node(got) : got == want;
}

/* Where each kind is before a migration. */
static enum loc initial_loc(enum kind k)
{
	static const enum loc l[NKINDS] = {
		[K_HOLE] = L_NONE, [K_ZERO] = L_ZERO, [K_ANON0] = L_NODE0,
		[K_ANON1] = L_NODE1, [K_FILE] = L_NODE0, [K_SWAP] = L_SWAP,
		[K_PRIV0] = L_DEV0, [K_PRIV1] = L_DEV1, [K_COH2] = L_DEV2,
		[K_COH3] = L_DEV3, [K_THP] = L_NODE0,
	};

	return l[k];
}

/* ---- columns ------------------------------------------------------------ */

enum dst {
	D_DEVICE, D_SYSTEM, D_NODE0, D_NODE1, D_NODE0_NON, D_NODE1_NON,
	D_NODE2, NDSTS
};

static const char *const dst_names[NDSTS] = {
	"DEVICE", "SYSTEM", "NODE 0", "NODE 1", "NODE 0, NOT_ON_NODE",
	"NODE 1, NOT_ON_NODE", "NODE 2 (none)",
};

/* The node of a NODE destination, else -1. */
static int dst_node(enum dst d)
{
	switch (d) {
	case D_NODE0:
	case D_NODE0_NON:
		return 0;
	case D_NODE1:
	case D_NODE1_NON:
		return 1;
	case D_NODE2:
		return 2;
	default:
		return -1;
	}
}

static bool dst_not_on_node(enum dst d)
{
	return d == D_NODE0_NON || d == D_NODE1_NON;
}

struct col {
	int dev;		/* the device the call goes through */
	int src;		/* -1: its own pages; else SRC_DEV @src */
	uint32_t select;
	bool thp;		/* HMM_RS_REQ_THP */
	enum dst dst;
};

/* The device whose pages the column selects. */
static int col_owner(const struct col *c)
{
	return c->src < 0 ? c->dev : c->src;
}

/* The other devices a column names: of the same kind, of the other kind. */
static int same_kind(int dev)
{
	return dev ^ 1;
}

static int other_kind(int dev)
{
	return dev ^ 2;
}

static const char *sel_name(uint32_t sel)
{
	static const char *const n[8] = {
		"-", "S", "P", "S|P", "C", "S|C", "P|C", "S|P|C",
	};

	return n[sel & 7];
}

static const char *col_name(const struct col *c, char *buf, size_t len)
{
	char owner[32];

	if (c->src < 0)
		snprintf(owner, sizeof(owner), "own pages");
	else
		snprintf(owner, sizeof(owner), "SRC_DEV %d", c->src);
	snprintf(buf, len, "dmirror%d, %s, select %s%s, to %s", c->dev, owner,
		 sel_name(c->select), c->thp ? " + REQ_THP" : "",
		 dst_names[c->dst]);
	return buf;
}

/*
 * The -errno the uapi gives the column, 0 if it is a valid request
 * (include/uapi/hmm_rs.h, "Directions" and "Errors"): to this device,
 * system memory alone, or with SRC_DEV device kinds only; to system memory,
 * device kinds only; to a node, any selection, NOT_ON_NODE only with
 * SYSTEM; a node without memory, ENODEV.
 */
static int refusal(const struct col *c)
{
	bool sys = c->select & HMM_RS_SELECT_SYSTEM;
	bool priv = c->select & HMM_RS_SELECT_DEVICE_PRIVATE;

	switch (c->dst) {
	case D_DEVICE:
		if (c->src < 0)
			return c->select == HMM_RS_SELECT_SYSTEM ? 0 : -EINVAL;
		return sys ? -EINVAL : 0;
	case D_SYSTEM:
		return sys ? -EINVAL : 0;
	case D_NODE2:
		return -ENODEV;
	default:
		if (dst_not_on_node(c->dst) && !sys)
			return -EINVAL;
		/* SRC_DEV selects device pages only. */
		if (sys && c->src >= 0)
			return -EINVAL;
		/*
		 * REQ_THP with SYSTEM and DEVICE_PRIVATE: device-private pages
		 * are collected without COMPOUND on 7.3, which would split the
		 * system THPs REQ_THP promises to keep whole.
		 */
		if (c->thp && sys && priv)
			return -EINVAL;
		return 0;
	}
}

/* ---- expectations -------------------------------------------------------- */

struct want {
	uint8_t status;
	enum loc loc;
	bool huge;		/* the THP, in system memory: still PMD-mapped */
};

static struct want W(uint8_t status, enum loc loc)
{
	return (struct want){ .status = status, .loc = loc };
}

/*
 * What HMM_RS_MIGRATE does with a page of kind @k in column @c, from the
 * uapi (include/uapi/hmm_rs.h) and Documentation/migrate-reasons.rst:
 *
 * - A page the selection takes moves to the destination: this device,
 *   system memory, or @node (where a system page already on @node stays,
 *   ON_NODE, with NOT_ON_NODE; without it, it gets a new page there).
 * - A hole is populated only by a move of system memory to the device;
 *   else it stays a hole, NOT_PRESENT. The zero page is collected as a
 *   hole when SYSTEM is selected (populated on the device, left as it is
 *   on a node: ZERO_PAGE, "as move_pages(2) leaves it"), and is ZERO_PAGE
 *   when SYSTEM is not.
 * - A system page (anonymous, file, THP) without SYSTEM: NOT_SELECTED. A
 *   file page cannot go to a device, nor to a node (7.3's
 *   migrate_vma_pages() cannot move one safely to system memory):
 *   FILE_BACKED, unless already on the node with NOT_ON_NODE.
 * - Swapped out: NOT_PRESENT (a module cannot tell it from a hole on 7.3).
 * - A device-private page of another owner than the column's: NOT_PRESENT
 *   (not valid in the snapshot); of the owner but DEVICE_PRIVATE not
 *   selected: NOT_SELECTED.
 * - A device-coherent page of another owner: OTHER_OWNER, whatever the
 *   selection (the owner is told before the selection); of the owner but
 *   DEVICE_COHERENT not selected: NOT_SELECTED.
 * - The THP with REQ_THP is collected whole and moves (or stays) whole,
 *   every page MIGRATED|WHOLE (ON_NODE|WHOLE), still huge on a node, "if a
 *   destination of its size can be had, else page by page"; without it,
 *   page by page, no WHOLE, split. NOT_ON_NODE keeps one already on the
 *   node whole (ON_NODE|WHOLE, still huge) even without REQ_THP, unless
 *   DEVICE_PRIVATE is selected (collected split on 7.3).
 * - None of these reasons is transient: no RETRY bit anywhere.
 */
static struct want expect(enum kind k, const struct col *c)
{
	bool sys = c->select & HMM_RS_SELECT_SYSTEM;
	bool priv = c->select & HMM_RS_SELECT_DEVICE_PRIVATE;
	bool coh = c->select & HMM_RS_SELECT_DEVICE_COHERENT;
	int owner = col_owner(c), node = dst_node(c->dst), dev;
	uint8_t whole = c->thp ? HMM_RS_STATUS_WHOLE : 0;
	enum loc moved, from = initial_loc(k);
	struct want w;

	switch (c->dst) {
	case D_DEVICE:
		moved = L_DEV0 + c->dev;
		break;
	case D_SYSTEM:
		moved = L_SYS;
		break;
	default:
		moved = L_NODE0 + node;
		break;
	}

	switch (k) {
	case K_HOLE:
		if (c->dst == D_DEVICE && sys)
			return W(HMM_RS_MIGRATED, moved);
		return W(HMM_RS_NOT_PRESENT, from);
	case K_ZERO:
		if (sys && c->dst == D_DEVICE)
			return W(HMM_RS_MIGRATED, moved);
		return W(HMM_RS_ZERO_PAGE, from);
	case K_ANON0:
	case K_ANON1:
	case K_FILE:
		if (!sys)
			return W(HMM_RS_NOT_SELECTED, from);
		if (c->dst == D_DEVICE)
			return k == K_FILE ? W(HMM_RS_FILE_BACKED, from) :
					     W(HMM_RS_MIGRATED, moved);
		if (dst_not_on_node(c->dst) && from == L_NODE0 + node)
			return W(HMM_RS_ON_NODE, from);
		if (k == K_FILE)
			return W(HMM_RS_FILE_BACKED, from);
		return W(HMM_RS_MIGRATED, moved);
	case K_SWAP:
		return W(HMM_RS_NOT_PRESENT, from);
	case K_PRIV0:
	case K_PRIV1:
		dev = k - K_PRIV0;
		if (owner != dev)
			return W(HMM_RS_NOT_PRESENT, from);
		if (!priv)
			return W(HMM_RS_NOT_SELECTED, from);
		return W(HMM_RS_MIGRATED, moved);
	case K_COH2:
	case K_COH3:
		dev = 2 + k - K_COH2;
		if (owner != dev)
			return W(HMM_RS_OTHER_OWNER, from);
		if (!coh)
			return W(HMM_RS_NOT_SELECTED, from);
		return W(HMM_RS_MIGRATED, moved);
	case K_THP:
		if (!sys) {
			w = W(HMM_RS_NOT_SELECTED, from);
			w.huge = true;
			return w;
		}
		/*
		 * Device-coherent memory has no destination of a THP's size:
		 * a pagemap hands out folios of order > 0 only if it is
		 * device-private (Documentation/design.rst, "Large folios";
		 * DeviceMemory::has_order()), so to dmirror2 the THP goes page
		 * by page. (First expected whole: the uapi allows this.)
		 */
		if (c->dst == D_DEVICE && c->dev >= 2)
			whole = 0;
		if (dst_not_on_node(c->dst) && from == L_NODE0 + node) {
			/* Collected whole for the filter (REQ_THP or not). */
			whole = priv ? 0 : HMM_RS_STATUS_WHOLE;
			w = W(HMM_RS_ON_NODE | whole, from);
		} else {
			w = W(HMM_RS_MIGRATED | whole, moved);
		}
		w.huge = whole;
		return w;
	default:
		return W(0xff, L_OTHER);
	}
}

/*
 * Cells where the driver is known to differ from expect(): what it does
 * instead is asserted, so that a fix (or any other change) shows. Each
 * entry matches a kind and the columns whose selection has all of
 * @sel_has, with @thp (-1: either) and destination @dst (-1: any).
 */
struct known_wrong {
	enum kind kind;
	uint32_t sel_has;
	int thp;
	int dst;
	uint8_t got;		/* the status byte the driver gives */
	int got_huge;		/* -1: as expected */
	const char *why;
};

/*
 * None now. The first run found one: REQ_THP with SYSTEM and
 * DEVICE_PRIVATE split the system THP (MigrateVma::setup_raw() drops
 * Select::Compound when DevicePrivate is selected); the driver now refuses
 * that request with EINVAL (refusal()).
 */
static const struct known_wrong known_wrong[] = {};

#define NKNOWN ARRAY_SIZE(known_wrong)
#define NKNOWN_MAX 16
_Static_assert(NKNOWN <= NKNOWN_MAX, "known_wrong[]: raise NKNOWN_MAX");

static int known_wrong_index(enum kind k, const struct col *c)
{
	unsigned int i;

	for (i = 0; i < NKNOWN; i++) {
		const struct known_wrong *kw = &known_wrong[i];

		if (kw->kind == k &&
		    (c->select & kw->sel_has) == kw->sel_has &&
		    (kw->thp < 0 || kw->thp == c->thp) &&
		    (kw->dst < 0 || kw->dst == (int)c->dst))
			return i;
	}
	return -1;
}

/* ---- the totals, shared by the tests (each runs in a child) ------------- */

/* Outcomes of a cell: a reason, or the call refused with EINVAL, ENODEV. */
#define OUT_EINVAL	HMM_RS_NR_REASONS
#define OUT_ENODEV	(HMM_RS_NR_REASONS + 1)
#define NOUTS		(HMM_RS_NR_REASONS + 2)
#define NGROUPS		(2 * NDSTS)

struct totals {
	int started[NGROUPS], done[NGROUPS];
	unsigned long columns[NDSTS], valid[NDSTS], refused[NDSTS];
	unsigned long cells, bad_cells;
	unsigned long out[NDSTS][NKINDS][NOUTS];	/* cells */
	unsigned long whole[NDSTS][NKINDS];		/* cells with WHOLE */
	unsigned long reason_pages[HMM_RS_NR_REASONS];
	unsigned long reason_cells[HMM_RS_NR_REASONS];
	unsigned long whole_pages, retry_pages;
	unsigned long known[NKNOWN_MAX];		/* cells per entry */
	double secs[NGROUPS];
};

static struct totals *tot;

static void __attribute__((constructor)) init_totals(void)
{
	void *p = mmap(NULL, sizeof(*tot), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	tot = p == MAP_FAILED ? NULL : p;
}

/* ---- data ---------------------------------------------------------------- */

/* Word @w of page @page for column @seed: never 0. */
static uint64_t word(unsigned long page, unsigned long w, unsigned int seed)
{
	return (uint64_t)(seed + 1) << 40 | (uint64_t)page << 20 | (w + 1);
}

static void fill(char *base, unsigned long from, unsigned long n,
		 unsigned int seed)
{
	unsigned long pg, w, words = ps / sizeof(uint64_t);

	for (pg = from; pg < from + n; pg++) {
		uint64_t *p = (uint64_t *)(base + pg * ps);

		for (w = 0; w < words; w++)
			p[w] = word(pg, w, seed);
	}
}

/*
 * The first page of [from, from + n) that does not hold its data (zeroes
 * if @zero), read by the CPU; -1 if none. The first bad word in @bad_word.
 */
static long bad_data(const char *base, unsigned long from, unsigned long n,
		     unsigned int seed, bool zero, unsigned long *bad_word)
{
	unsigned long pg, w, words = ps / sizeof(uint64_t);

	for (pg = from; pg < from + n; pg++) {
		const uint64_t *p = (const uint64_t *)(base + pg * ps);

		for (w = 0; w < words; w++)
			if (p[w] != (zero ? 0 : word(pg, w, seed))) {
				*bad_word = w;
				return pg;
			}
	}
	return -1;
}

static bool has_data(enum kind k)
{
	return k != K_HOLE && k != K_ZERO;
}

/* ---- the range ------------------------------------------------------------ */

struct scene {
	char *base;		/* the THP, the small pages, the file */
	unsigned long npages;
	int memfd;
	unsigned int seed;
};

/* What the test looks at: the devices, and what it saw of the range. */
struct ctx {
	int fd[NDEV];
	int pagemap;
	unsigned long npages;
	uint8_t *st;
	uint8_t *snap[NDEV];
	enum loc *loc;
	bool *huge;
	uint64_t *pm, *pm_before;	/* pagemap entries */
	int *node;
	void **addrs;
	struct scene sc;
};

static void unmap_scene(struct scene *s)
{
	if (s->base)
		munmap(s->base, s->npages * ps);
	if (s->memfd >= 0)
		close(s->memfd);
	s->base = NULL;
	s->memfd = -1;
}

/*
 * The three VMAs of the range, contiguous: an aligned 2 MiB one for the
 * THP (MADV_HUGEPAGE), one of small anonymous pages (MADV_NOHUGEPAGE), and
 * a shared mapping of a memfd. Returns 0 or -errno.
 */
static int map_scene(struct scene *s)
{
	size_t hsize = hpage_pages * ps, len = s->npages * ps;
	size_t small = NSMALL * PAGES_PER_KIND * ps;
	char *map, *base;

	s->memfd = memfd_create("hmm-rs-matrix", 0);
	if (s->memfd < 0)
		return -errno;
	if (ftruncate(s->memfd, PAGES_PER_KIND * ps))
		return -errno;
	map = mmap(NULL, len + hsize, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	base = (char *)(((uintptr_t)map + hsize - 1) & ~(hsize - 1));
	if (base > map)
		munmap(map, base - map);
	if (map + len + hsize > base + len)
		munmap(base + len, map + len + hsize - (base + len));
	s->base = base;
	if (mmap(base, hsize, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED ||
	    madvise(base, hsize, MADV_HUGEPAGE))
		return -errno;
	if (mmap(base + hsize, small, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED ||
	    madvise(base + hsize, small, MADV_NOHUGEPAGE))
		return -errno;
	if (mmap(base + hsize + small, PAGES_PER_KIND * ps,
		 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, s->memfd,
		 0) == MAP_FAILED)
		return -errno;
	return 0;
}

/* HMM_RS_MIGRATE of column @c over the whole range. Returns 0 or -errno. */
static int migrate(int fd, const struct scene *s, const struct col *c,
		   uint8_t *st, struct hmm_rs_migrate *m)
{
	int node = dst_node(c->dst);
	uint32_t flags = 0, dst;

	if (c->thp)
		flags |= HMM_RS_REQ_THP;
	if (c->src >= 0)
		flags |= HMM_RS_REQ_SRC_DEV;
	if (dst_not_on_node(c->dst))
		flags |= HMM_RS_REQ_NOT_ON_NODE;
	dst = c->dst == D_DEVICE ? HMM_RS_DST_DEVICE :
	      c->dst == D_SYSTEM ? HMM_RS_DST_SYSTEM : HMM_RS_DST_NODE;
	*m = (struct hmm_rs_migrate){
		.addr = (uintptr_t)s->base,
		.npages = s->npages,
		.status = (uintptr_t)st,
		.select = c->select,
		.dst = dst,
		.flags = flags,
		.src_dev = c->src < 0 ? 0 : c->src,
		.node = node < 0 ? 0 : node,
	};
	return ioctl(fd, HMM_RS_MIGRATE, m) ? -errno : 0;
}

/*
 * Where each page of the range is: x->loc, x->huge (PMD-mapped), and the
 * pagemap entries in x->pm. Returns 0 or -errno.
 */
static int locate(struct ctx *x)
{
	char *base = x->sc.base;
	unsigned long i, n = 0, j;
	int d, ret;

	for (d = 0; d < NDEV; d++) {
		ret = hmm_rs_cmd(x->fd[d], HMM_DMIRROR_SNAPSHOT,
				 (uintptr_t)base, x->snap[d], x->npages, NULL);
		if (ret)
			return ret;
	}
	if (pread(x->pagemap, x->pm, x->npages * sizeof(uint64_t),
		  (uintptr_t)base / ps * sizeof(uint64_t)) !=
	    (ssize_t)(x->npages * sizeof(uint64_t)))
		return -EIO;
	for (i = 0; i < x->npages; i++) {
		uint8_t s0 = x->snap[0][i];

		x->huge[i] = false;
		if ((s0 & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL) {
			x->loc[i] = L_DEV0;
		} else if ((x->snap[1][i] & 0xf0) ==
			   HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL) {
			x->loc[i] = L_DEV1;
		} else if ((x->snap[2][i] & 0xf0) ==
			   HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL) {
			x->loc[i] = L_DEV2;
		} else if ((x->snap[3][i] & 0xf0) ==
			   HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL) {
			x->loc[i] = L_DEV3;
		} else if (s0 == HMM_DMIRROR_PROT_ERROR) {
			x->loc[i] = L_OTHER;
		} else if ((s0 & 0xf0) == HMM_DMIRROR_PROT_ZERO) {
			x->loc[i] = L_ZERO;
		} else if (s0 & (HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_WRITE)) {
			/* System memory: its node below. */
			x->loc[i] = L_SYS;
			x->huge[i] = s0 & HMM_DMIRROR_PROT_PMD;
			x->addrs[n++] = base + i * ps;
		} else if (x->pm[i] & (1ULL << 62)) {
			x->loc[i] = L_SWAP;
		} else {
			x->loc[i] = L_NONE;
		}
	}
	if (n && syscall(SYS_move_pages, 0, n, x->addrs, NULL, x->node, 0))
		return -errno;
	for (i = 0, j = 0; i < x->npages; i++) {
		if (x->loc[i] != L_SYS)
			continue;
		x->loc[i] = x->node[j] == 0 ? L_NODE0 :
			    x->node[j] == 1 ? L_NODE1 : L_OTHER;
		j++;
	}
	return 0;
}

#define PM_PFN(e) ((e) & ((1ULL << 55) - 1))

/* Whether page @i is on the page frame it was on before the call. */
static bool same_frame(const struct ctx *x, unsigned long i)
{
	return PM_PFN(x->pm[i]) == PM_PFN(x->pm_before[i]);
}

/* Whether page @i of kind @k is as the scene sets it up. */
static bool as_set_up(const struct ctx *x, enum kind k, unsigned long i)
{
	if (x->loc[i] != initial_loc(k))
		return false;
	return k != K_THP || x->huge[i];
}

/*
 * Sets the range up afresh for column seed @seed: every kind where its row
 * says, checked by locate(). Returns 0, or logs and returns -1.
 */
static int set_up(struct __test_metadata *_metadata, struct ctx *x,
		  unsigned int seed)
{
	struct scene *s = &x->sc;
	unsigned long i;
	struct hmm_rs_migrate m;
	unsigned long sum = 0;
	int k, ret, tries;

	s->npages = x->npages;
	s->seed = seed;
	ret = map_scene(s);
	if (ret) {
		TH_LOG("setup: mapping the range: %s", strerror(-ret));
		return -1;
	}
	for (k = 0; k < NKINDS; k++)
		if (has_data(k))
			fill(s->base, kind_first(k), kind_pages(k), seed);
	/* Read, never written: the zero page. */
	for (i = 0; i < PAGES_PER_KIND; i++)
		sum += __atomic_load_n(s->base + (kind_first(K_ZERO) + i) * ps,
				       __ATOMIC_RELAXED);
	if (sum) {
		TH_LOG("setup: a page never written reads %lu", sum);
		return -1;
	}
	ret = locate(x);
	if (!ret && !x->huge[0]) {
		madvise(s->base, hpage_pages * ps, MADV_COLLAPSE);
		ret = locate(x);
	}
	if (ret || !x->huge[0]) {
		TH_LOG("setup: no THP for the range (%s)",
		       ret ? strerror(-ret) : "not PMD-mapped");
		return -1;
	}
	ret = hmm_rs_place(s->base + kind_first(K_ANON1) * ps, PAGES_PER_KIND,
			   ps, 1);
	if (ret) {
		TH_LOG("setup: move_pages to node 1: %s", strerror(-ret));
		return -1;
	}
	for (k = K_PRIV0; k <= K_COH3; k++) {
		int dev = k - K_PRIV0;

		ret = hmm_rs_migrate(x->fd[dev],
				     s->base + kind_first(k) * ps,
				     PAGES_PER_KIND, NULL,
				     HMM_RS_SELECT_SYSTEM, HMM_RS_DST_DEVICE,
				     0, &m);
		if (ret || m.migrated != PAGES_PER_KIND) {
			TH_LOG("setup: to %s: %s, %llu migrated", devices[dev],
			       strerror(-ret),
			       (unsigned long long)m.migrated);
			return -1;
		}
	}
	for (tries = 0; tries < 10; tries++) {
		char *p = s->base + kind_first(K_SWAP) * ps;

		madvise(p, PAGES_PER_KIND * ps, MADV_PAGEOUT);
		for (i = 0; i < PAGES_PER_KIND; i++)
			if (hmm_rs_swapped(p + i * ps, ps) != 1)
				break;
		if (i == PAGES_PER_KIND)
			break;
		usleep(1000);
	}
	ret = locate(x);
	if (ret) {
		TH_LOG("setup: locate: %s", strerror(-ret));
		return -1;
	}
	for (k = 0; k < NKINDS; k++) {
		unsigned long first = kind_first(k);

		for (i = first; i < first + kind_pages(k); i++) {
			if (as_set_up(x, k, i))
				continue;
			TH_LOG("setup: %s page %lu: at %s%s, not %s", kind_names[k],
			       i - first, loc_names[x->loc[i]],
			       x->huge[i] ? " (huge)" : "",
			       loc_names[initial_loc(k)]);
			return -1;
		}
	}
	memcpy(x->pm_before, x->pm, x->npages * sizeof(uint64_t));
	return 0;
}

/* ---- checking a column ---------------------------------------------------- */

static const char *status_name(unsigned int s, char *buf, size_t len)
{
	const char *r = hmm_rs_reason_name(s & HMM_RS_STATUS_REASON);

	if (s > 0xff) {
		snprintf(buf, len, "none");
		return buf;
	}
	snprintf(buf, len, "%s%s%s", r ? r : "?",
		 s & HMM_RS_STATUS_WHOLE ? "|WHOLE" : "",
		 s & HMM_RS_STATUS_RETRY ? "|RETRY" : "");
	return buf;
}

/*
 * The first page of kind @k that is not as @w says after a call that moved
 * what it moved (@refused: a refused call, which must leave every page as
 * it was), else -1; what is wrong in @why.
 */
static long cell_mismatch(const struct ctx *x, enum kind k,
			  const struct want *w, bool refused, char *why,
			  size_t len)
{
	unsigned long first = kind_first(k), i;
	char g[48], e[48];

	for (i = first; i < first + kind_pages(k); i++) {
		bool system = on_node(x->loc[i]) || x->loc[i] == L_ZERO;
		bool moved = !refused && (w->status & HMM_RS_STATUS_REASON) ==
					 HMM_RS_MIGRATED;
		bool was_system = on_node(initial_loc(k)) ||
				  initial_loc(k) == L_ZERO;

		if (!refused && x->st[i] != w->status) {
			snprintf(why, len, "status 0x%02x (%s), expected 0x%02x (%s)",
				 x->st[i], status_name(x->st[i], g, sizeof(g)),
				 w->status, status_name(w->status, e, sizeof(e)));
			return i - first;
		}
		if (!loc_matches(x->loc[i], w->loc)) {
			snprintf(why, len, "at %s, expected at %s",
				 loc_names[x->loc[i]], loc_names[w->loc]);
			return i - first;
		}
		if (k == K_THP && system && x->huge[i] != w->huge) {
			snprintf(why, len, "%s, expected %s",
				 x->huge[i] ? "PMD-mapped" : "split",
				 w->huge ? "PMD-mapped" : "split");
			return i - first;
		}
		/* A system page that moved is on a new page frame. */
		if (system && was_system && same_frame(x, i) == moved) {
			snprintf(why, len, "%s page frame (pfn %#llx before, %#llx after)",
				 moved ? "the same" : "a new",
				 (unsigned long long)PM_PFN(x->pm_before[i]),
				 (unsigned long long)PM_PFN(x->pm[i]));
			return i - first;
		}
	}
	return -1;
}

/* The status bytes decoded: do they agree with counts[] and migrated? */
static int bad_counts(struct __test_metadata *_metadata, const char *name,
		      const struct ctx *x, const struct hmm_rs_migrate *m)
{
	uint64_t counts[HMM_RS_NR_REASONS] = { 0 }, sum = 0;
	unsigned long i;
	int r, bad = 0;

	for (i = 0; i < x->npages; i++) {
		r = x->st[i] & HMM_RS_STATUS_REASON;
		if (r < HMM_RS_NR_REASONS) {
			counts[r]++;
		} else if (!bad++) {
			TH_LOG("%s: page %lu: status 0x%02x, no reason", name,
			       i, x->st[i]);
		}
	}
	for (r = 0; r < HMM_RS_NR_REASONS; r++) {
		sum += m->counts[r];
		if (m->counts[r] == counts[r])
			continue;
		TH_LOG("%s: counts[%s] %llu, the status bytes say %llu", name,
		       hmm_rs_reason_name(r) ?: "?",
		       (unsigned long long)m->counts[r],
		       (unsigned long long)counts[r]);
		bad++;
	}
	if (sum != x->npages || m->migrated != m->counts[HMM_RS_MIGRATED]) {
		TH_LOG("%s: counts add up to %llu of %lu pages, migrated %llu",
		       name, (unsigned long long)sum, x->npages,
		       (unsigned long long)m->migrated);
		bad++;
	}
	return bad;
}

/* Logs at most this many bad cells per group (the rest are counted). */
#define LOG_CELLS 24

struct group {
	const char *name;
	int id;
	unsigned long bad_cells, logged;
};

static void bad_cell(struct __test_metadata *_metadata, struct group *g,
		     const char *col, enum kind k, long page, const char *why)
{
	g->bad_cells++;
	if (g->logged++ < LOG_CELLS)
		TH_LOG("cell [%s] x %s: page %ld of %lu: %s", col,
		       kind_names[k], page, kind_pages(k), why);
}

/*
 * The cells of a column that ran: status, place and data of each kind, and
 * the counts. Returns the number of bad cells.
 */
static void check_column(struct __test_metadata *_metadata, struct ctx *x,
			 struct group *g, const struct col *c,
			 const struct hmm_rs_migrate *m)
{
	char name[128], why[160];
	bool bad[NKINDS] = { false };
	unsigned long w, i;
	int k, kw;

	col_name(c, name, sizeof(name));
	if (bad_counts(_metadata, name, x, m))
		g->bad_cells++;
	if (locate(x)) {
		bad_cell(_metadata, g, name, K_HOLE, 0, "locate failed");
		return;
	}
	for (k = 0; k < NKINDS; k++) {
		struct want want = expect(k, c), doc = want;
		long page, doc_page;

		kw = known_wrong_index(k, c);
		if (kw >= 0) {
			want.status = known_wrong[kw].got;
			if (known_wrong[kw].got_huge >= 0)
				want.huge = known_wrong[kw].got_huge;
		}
		page = cell_mismatch(x, k, &want, false, why, sizeof(why));
		if (page >= 0) {
			bad[k] = true;
			bad_cell(_metadata, g, name, k, page, why);
		} else if (kw >= 0) {
			doc_page = cell_mismatch(x, k, &doc, false, why,
						 sizeof(why));
			if (doc_page < 0) {
				bad[k] = true;
				bad_cell(_metadata, g, name, k, 0,
					 "as documented now: remove its known_wrong[] entry");
			} else {
				tot->known[kw]++;
			}
		}
	}
	/* Last: reading faults device pages back and swaps pages in. */
	for (k = 0; k < NKINDS; k++) {
		long page = bad_data(x->sc.base, kind_first(k), kind_pages(k),
				     x->sc.seed, !has_data(k), &w);

		if (page < 0)
			continue;
		snprintf(why, sizeof(why), "data: word %lu is %#llx", w,
			 (unsigned long long)((uint64_t *)(x->sc.base +
							   page * ps))[w]);
		if (!bad[k])
			bad_cell(_metadata, g, name, k,
				 page - kind_first(k), why);
		bad[k] = true;
	}
	for (k = 0; k < NKINDS; k++) {
		uint8_t s = x->st[kind_first(k)];
		unsigned int r = s & HMM_RS_STATUS_REASON;

		tot->cells++;
		if (r < HMM_RS_NR_REASONS) {
			tot->out[c->dst][k][r]++;
			tot->reason_cells[r]++;
		}
		if (s & HMM_RS_STATUS_WHOLE)
			tot->whole[c->dst][k]++;
	}
	for (i = 0; i < x->npages; i++) {
		unsigned int r = x->st[i] & HMM_RS_STATUS_REASON;

		if (r < HMM_RS_NR_REASONS)
			tot->reason_pages[r]++;
		tot->whole_pages += !!(x->st[i] & HMM_RS_STATUS_WHOLE);
		tot->retry_pages += !!(x->st[i] & HMM_RS_STATUS_RETRY);
	}
}

/* The status array as the test leaves it before a call. */
#define UNTOUCHED 0xee

/*
 * The refused columns of a group, on one range: each fails with its
 * errno, writes no status, and leaves every page as it was (place, page
 * frame); the data is read back once at the end.
 */
static void run_refused(struct __test_metadata *_metadata, struct ctx *x,
			struct group *g, const struct col *cols,
			unsigned int n, unsigned int seed)
{
	char name[128], why[160];
	struct hmm_rs_migrate m;
	unsigned long i, w;
	unsigned int j;
	int k, err, ret;

	if (!n)
		return;
	ASSERT_EQ(0, set_up(_metadata, x, seed));
	for (j = 0; j < n; j++) {
		const struct col *c = &cols[j];

		col_name(c, name, sizeof(name));
		err = refusal(c);
		memset(x->st, UNTOUCHED, x->npages);
		ret = migrate(x->fd[c->dev], &x->sc, c, x->st, &m);
		if (ret != err) {
			snprintf(why, sizeof(why), "returned %s, expected %s",
				 ret ? strerror(-ret) : "0", strerror(-err));
			bad_cell(_metadata, g, name, K_HOLE, 0, why);
		}
		for (i = 0; i < x->npages; i++)
			if (x->st[i] != UNTOUCHED)
				break;
		if (i < x->npages) {
			snprintf(why, sizeof(why), "status of page %lu written: 0x%02x",
				 i, x->st[i]);
			bad_cell(_metadata, g, name, K_HOLE, 0, why);
		}
		ASSERT_EQ(0, locate(x));
		for (k = 0; k < NKINDS; k++) {
			struct want want = W(0, initial_loc(k));
			long page;

			want.huge = k == K_THP;
			page = cell_mismatch(x, k, &want, true, why,
					     sizeof(why));
			if (page >= 0)
				bad_cell(_metadata, g, name, k, page, why);
			tot->cells++;
			tot->out[c->dst][k][err == -ENODEV ? OUT_ENODEV :
							    OUT_EINVAL]++;
		}
	}
	for (k = 0; k < NKINDS; k++) {
		long page = bad_data(x->sc.base, kind_first(k), kind_pages(k),
				     seed, !has_data(k), &w);

		if (page >= 0) {
			snprintf(why, sizeof(why), "data after the refused columns: word %lu",
				 w);
			bad_cell(_metadata, g, "refused", k,
				 page - kind_first(k), why);
		}
	}
	unmap_scene(&x->sc);
}

/* ---- the tests ------------------------------------------------------------ */

FIXTURE(matrix)
{
	struct ctx x;
};

FIXTURE_VARIANT(matrix)
{
	int dev;
	enum dst dst;
};

FIXTURE_VARIANT_ADD(matrix, dmirror0_to_device) { .dev = 0, .dst = D_DEVICE };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_system) { .dev = 0, .dst = D_SYSTEM };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_node0) { .dev = 0, .dst = D_NODE0 };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_node1) { .dev = 0, .dst = D_NODE1 };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_node0_not_on_node) { .dev = 0, .dst = D_NODE0_NON };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_node1_not_on_node) { .dev = 0, .dst = D_NODE1_NON };
FIXTURE_VARIANT_ADD(matrix, dmirror0_to_node2) { .dev = 0, .dst = D_NODE2 };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_device) { .dev = 2, .dst = D_DEVICE };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_system) { .dev = 2, .dst = D_SYSTEM };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_node0) { .dev = 2, .dst = D_NODE0 };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_node1) { .dev = 2, .dst = D_NODE1 };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_node0_not_on_node) { .dev = 2, .dst = D_NODE0_NON };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_node1_not_on_node) { .dev = 2, .dst = D_NODE1_NON };
FIXTURE_VARIANT_ADD(matrix, dmirror2_to_node2) { .dev = 2, .dst = D_NODE2 };

FIXTURE_SETUP(matrix)
{
	struct ctx *x = &self->x;
	int d;

	memset(x, 0, sizeof(*x));
	x->sc.memfd = -1;
	x->pagemap = -1;
	for (d = 0; d < NDEV; d++)
		x->fd[d] = -1;
	ASSERT_NE(NULL, tot);
	for (d = 0; d < NDEV; d++) {
		x->fd[d] = open(devices[d], O_RDWR);
		ASSERT_LE(0, x->fd[d]) TH_LOG("%s: %s (dmirror2 and 3 need spm_addr_dev0/1)",
					      devices[d], strerror(errno));
	}
	ASSERT_TRUE(hmm_rs_thp_enabled()) TH_LOG("transparent_hugepage/enabled is never");
	x->pagemap = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_LE(0, x->pagemap);
	swapoff(HMM_RS_SWAP_DEV);
	ASSERT_EQ(0, hmm_rs_swapon())
		TH_LOG("swap on %s: %s", HMM_RS_SWAP_DEV, strerror(errno));
	x->npages = range_pages();
	x->st = malloc(x->npages);
	x->loc = calloc(x->npages, sizeof(*x->loc));
	x->huge = calloc(x->npages, sizeof(*x->huge));
	x->pm = calloc(x->npages, sizeof(*x->pm));
	x->pm_before = calloc(x->npages, sizeof(*x->pm_before));
	x->node = calloc(x->npages, sizeof(*x->node));
	x->addrs = calloc(x->npages, sizeof(*x->addrs));
	ASSERT_TRUE(x->st && x->loc && x->huge && x->pm && x->pm_before &&
		    x->node && x->addrs);
	for (d = 0; d < NDEV; d++) {
		x->snap[d] = malloc(x->npages);
		ASSERT_NE(NULL, x->snap[d]);
	}
}

FIXTURE_TEARDOWN(matrix)
{
	struct ctx *x = &self->x;
	int d;

	unmap_scene(&x->sc);
	for (d = 0; d < NDEV; d++) {
		if (x->fd[d] >= 0)
			close(x->fd[d]);
		free(x->snap[d]);
	}
	if (x->pagemap >= 0)
		close(x->pagemap);
	free(x->st);
	free(x->loc);
	free(x->huge);
	free(x->pm);
	free(x->pm_before);
	free(x->node);
	free(x->addrs);
	swapoff(HMM_RS_SWAP_DEV);
}

/* The selections, each without and with HMM_RS_REQ_THP. */
#define NSEL 14
/* Owners: own pages, another device's of the same kind, of the other. */
#define NOWN 3
#define NCOLS (NOWN * NSEL)

TEST_F_TIMEOUT(matrix, cells, 600)
{
	struct ctx *x = &self->x;
	struct group g = {
		.id = (variant->dev / 2) * NDSTS + variant->dst,
	};
	struct col cols[NCOLS], refused[NCOLS];
	unsigned int n = 0, nref = 0, j;
	struct hmm_rs_migrate m;
	double start = now();
	char name[128], why[64];
	int o, s, ret;

	tot->started[g.id] = 1;
	for (o = 0; o < NOWN; o++) {
		for (s = 0; s < NSEL; s++) {
			struct col c = {
				.dev = variant->dev,
				.src = o == 0 ? -1 : o == 1 ?
				       same_kind(variant->dev) :
				       other_kind(variant->dev),
				.select = s / 2 + 1,
				.thp = s & 1,
				.dst = variant->dst,
			};

			if (refusal(&c))
				refused[nref++] = c;
			else
				cols[n++] = c;
		}
	}
	tot->columns[variant->dst] += n + nref;
	tot->valid[variant->dst] += n;
	tot->refused[variant->dst] += nref;

	run_refused(_metadata, x, &g, refused, nref, g.id * 64 + 63);
	for (j = 0; j < n; j++) {
		const struct col *c = &cols[j];

		ASSERT_EQ(0, set_up(_metadata, x, g.id * 64 + j));
		memset(x->st, UNTOUCHED, x->npages);
		ret = migrate(x->fd[c->dev], &x->sc, c, x->st, &m);
		if (ret) {
			col_name(c, name, sizeof(name));
			snprintf(why, sizeof(why), "HMM_RS_MIGRATE: %s",
				 strerror(-ret));
			bad_cell(_metadata, &g, name, K_HOLE, 0, why);
		} else {
			check_column(_metadata, x, &g, c, &m);
		}
		unmap_scene(&x->sc);
	}
	tot->secs[g.id] = now() - start;
	tot->bad_cells += g.bad_cells;
	printf("# %d columns (%u valid, %u refused) in %.1f s, %lu bad cells\n",
	       NCOLS, n, nref, tot->secs[g.id], g.bad_cells);
	fflush(stdout);
	tot->done[g.id] = 1;
	ASSERT_EQ(0, g.bad_cells);
}

/* ---- the summary ------------------------------------------------------------ */

FIXTURE(matrix_summary) {};
FIXTURE_SETUP(matrix_summary) {}
FIXTURE_TEARDOWN(matrix_summary) {}

/* The outcomes tabled, in this order, with their headings. */
static const int table_outs[] = {
	HMM_RS_MIGRATED, HMM_RS_NOT_PRESENT, HMM_RS_ZERO_PAGE,
	HMM_RS_NOT_SELECTED, HMM_RS_OTHER_OWNER, HMM_RS_FILE_BACKED,
	HMM_RS_ON_NODE, OUT_EINVAL, OUT_ENODEV,
};

static const char *const table_heads[] = {
	"MIGR", "NPRS", "ZERO", "NSEL", "OWNR", "FILE", "ONND", "EINV", "ENOD",
};

#define NTABLE ARRAY_SIZE(table_outs)

static void print_table(enum dst d)
{
	char line[160];
	unsigned int t;
	int k, n;

	printf("# to %s: %lu columns, %lu valid, %lu refused; cells by outcome (+W: WHOLE, ?: other)\n",
	       dst_names[d], tot->columns[d], tot->valid[d], tot->refused[d]);
	n = snprintf(line, sizeof(line), "#   %-8s", "kind");
	for (t = 0; t < NTABLE; t++)
		n += snprintf(line + n, sizeof(line) - n, " %4s",
			      table_heads[t]);
	printf("%s   +W    ?\n", line);
	for (k = 0; k < NKINDS; k++) {
		unsigned long listed = 0, all = 0;
		int r;

		n = snprintf(line, sizeof(line), "#   %-8s", kind_names[k]);
		for (t = 0; t < NTABLE; t++) {
			unsigned long v = tot->out[d][k][table_outs[t]];

			listed += v;
			if (v)
				n += snprintf(line + n, sizeof(line) - n,
					      " %4lu", v);
			else
				n += snprintf(line + n, sizeof(line) - n,
					      " %4s", ".");
		}
		for (r = 0; r < NOUTS; r++)
			all += tot->out[d][k][r];
		printf("%s %4lu %4lu\n", line, tot->whole[d][k], all - listed);
	}
}

TEST_F(matrix_summary, table)
{
	unsigned long columns = 0, valid = 0, refused = 0, pages = 0;
	unsigned int i;
	int d, r, g, unfinished = 0;

	ASSERT_NE(NULL, tot);
	for (d = 0; d < NDSTS; d++) {
		columns += tot->columns[d];
		valid += tot->valid[d];
		refused += tot->refused[d];
		print_table(d);
	}
	printf("# per reason: pages (status bytes) and cells, valid columns\n");
	for (r = 0; r < HMM_RS_NR_REASONS; r++) {
		pages += tot->reason_pages[r];
		if (!tot->reason_pages[r])
			continue;
		printf("#   %-13s %7lu pages %5lu cells\n",
		       hmm_rs_reason_name(r), tot->reason_pages[r],
		       tot->reason_cells[r]);
	}
	printf("#   %-13s %7lu pages\n#   %-13s %7lu pages\n", "(WHOLE)",
	       tot->whole_pages, "(RETRY)", tot->retry_pages);
	printf("#   %-13s %7lu pages\n", "total", pages);
	for (i = 0; i < NKNOWN; i++)
		printf("# known_wrong[%u]: %s: %lu cells: %s\n", i,
		       kind_names[known_wrong[i].kind], tot->known[i],
		       known_wrong[i].why);
	for (g = 0; g < NGROUPS; g++) {
		if (tot->started[g] && !tot->done[g]) {
			printf("# group %d (dmirror%d, to %s) did not finish\n",
			       g, g / NDSTS * 2, dst_names[g % NDSTS]);
			unfinished++;
		}
	}
	printf("# cells: %d kinds x %lu columns, %lu bad\n", NKINDS, columns,
	       tot->bad_cells);
	printf("# matrix: %lu columns (%lu valid, %lu refused), %lu page cells asserted\n",
	       columns, valid, refused, tot->cells);
	fflush(stdout);
	ASSERT_EQ(0, unfinished);
	ASSERT_EQ(columns * NKINDS, tot->cells);
}

TEST_HARNESS_MAIN
