// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs migrate kselftests: HMM_RS_MIGRATE (include/uapi/hmm_rs.h) moves
 * what the request selects in the direction it asks, and says for every
 * page why it stayed, if it did, and whether trying again can help. Each
 * call's status array is decoded into counts and checked against the
 * counts the call returned (they add up to npages; counts[MIGRATED] is
 * migrated); each page's status byte is checked against what the page
 * was; SNAPSHOT (lib/test_hmm_uapi.h) then says where each page is, and
 * the CPU reads the data back last (which faults device pages back).
 *
 * dmirror0 and dmirror1 are device-private memory of two owners, dmirror2
 * and dmirror3 device-coherent memory of two more (with spm_addr_dev0/1).
 * s2d: dst DEVICE, select SYSTEM, on dmirror0; d2s: dst SYSTEM, select
 * DEVICE_PRIVATE (d2s_any: DEVICE_PRIVATE | DEVICE_COHERENT), on dmirror0.
 *
 * migrate.{s2d,d2s,d2s_any}.*: anonymous pages, one kind each:
 *   written (s2d MIGRATED, data intact; d2s NOT_SELECTED), holes (s2d
 *   MIGRATED, populated on the device; d2s NOT_PRESENT), zero_pages, read
 *   but never written (s2d MIGRATED; d2s ZERO_PAGE, no RETRY), own_pages,
 *   on dmirror0 (s2d NOT_SELECTED; d2s with select DEVICE_COHERENT only
 *   NOT_SELECTED, then MIGRATED), other_owner, on dmirror1 (NOT_PRESENT
 *   both ways: a module cannot tell another owner's device-private entry
 *   from a swap entry on 7.3), subrange (only the pages asked for move),
 *   status_null (no status array: the counts alone).
 * coherent.{s2d,d2s}.*: the same on dmirror2, and other_owner: dmirror2's
 *   pages are OTHER_OWNER to dmirror3 both ways and to dmirror0 (present in
 *   the page table, so seen). Skips if there is no /dev/hmm_dmirror2.
 * d2d.*.moves: pages on one device go straight to another with
 *   HMM_RS_REQ_SRC_DEV (private to private, coherent to coherent, and
 *   across): all MIGRATED, on the destination and off the source per their
 *   SNAPSHOTs; again, nothing of the source's is left (the destination's
 *   pages are OTHER_OWNER if coherent, NOT_PRESENT if private); then back
 *   to system memory through the destination, every byte intact.
 * reasons.*.then_retry: a page that stays, and the same request again:
 *   pinned (gup_test's FOLL_PIN | FOLL_LONGTERM pin): PINNED, no RETRY;
 *   unpinned, MIGRATED. busy (vmspliced into a pipe: extra references):
 *   BUSY with RETRY; the pipe read empty, MIGRATED. no_memory
 *   (HMM_DMIRROR_FLAG_FAIL_ALLOC fails one device allocation): one page
 *   NO_MEMORY with RETRY, the others MIGRATED; again, that page MIGRATED,
 *   the others NOT_SELECTED (on the device by then). file_backed (a shared
 *   memfd): FILE_BACKED, no RETRY, both times.
 * thp.{whole,split}.{back_whole,back_split}: a 2 MiB THP to the device with
 *   and without HMM_RS_REQ_THP (512 MIGRATED, with WHOLE only with it), and
 *   back with and without it (never WHOLE: device-private THPs come back
 *   page by page on 7.3, see thp_roundtrip()). A THP the kernel cannot
 *   give skips the case.
 * mixed.{s2d,d2s}: holes, zero pages, written pages, pages on dmirror0 and
 *   on dmirror1 and (s2d) a pinned page in one call: each page as above.
 * command_read_only: the command in a read-only page: EFAULT, nothing moved.
 * bad_input.*.rejected: each bad request fails with its errno and changes
 *   nothing: SNAPSHOT and data of a buffer half on dmirror0 stay as they
 *   were. EINVAL: an unknown select, flags or dst value, a nonzero
 *   src_dev without HMM_RS_REQ_SRC_DEV or naming this device (ENODEV: no
 *   such device), HMM_RS_REQ_FAULT without SYSTEM, select 0, a select the
 *   destination does not take, an
 *   unaligned address, 0 pages, a size past 2^64 (npages * page size, in
 *   64 bits or not), a range that ends at 2^64, a range unmapped in whole
 *   or in its last page, or whose last page is PROT_NONE (the range is
 *   checked before anything moves). EFAULT: a status array in a read-only
 *   page, or running into one (it is written before anything moves), at
 *   address 16; a command at NULL. Where npages is huge, the status array
 *   is NULL, so that only the range can be at fault.
 *
 * RETRY is checked everywhere (clear unless said) except for NOT_PRESENT,
 * which covers an entry in transition as well as one that stays.
 *
 * Runs with the module loaded; see scripts/plans/check.
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
#include <sys/uio.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"
#include "uapi/hmm_rs.h"
/* PIN_LONGTERM_TEST_*, from the kernel source (-I$KSRC). */
#include "mm/gup_test.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define NPAGES 16
#define GUP_TEST "/sys/kernel/debug/gup_test"

static const char *const devices[] = {
	"/dev/hmm_dmirror0", "/dev/hmm_dmirror1",
	"/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
};

static long ps;

static void __attribute__((constructor)) init_page_size(void)
{
	ps = sysconf(_SC_PAGESIZE);
}

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return s ? s : "E?";
}

/* ---- status ------------------------------------------------------------ */

/*
 * An expectation is a status byte, or with RETRY_ANY one whose RETRY bit
 * is not checked.
 */
#define RETRY_ANY		0x100
#define WANT_NOT_PRESENT	(HMM_RS_NOT_PRESENT | RETRY_ANY)

/* Status byte or expectation @s in words: "NO_MEMORY|RETRY". */
static const char *describe(unsigned int s, char *buf, size_t len)
{
	unsigned int r = s & HMM_RS_STATUS_REASON;
	int n;

	if (hmm_rs_reason_name(r))
		n = snprintf(buf, len, "%s", hmm_rs_reason_name(r));
	else
		n = snprintf(buf, len, "reason %u", r);
	snprintf(buf + n, len - n, "%s%s%s",
		 s & HMM_RS_STATUS_WHOLE ? "|WHOLE" : "",
		 s & HMM_RS_STATUS_RETRY ? "|RETRY" : "",
		 s & RETRY_ANY ? " (RETRY or not)" : "");
	return buf;
}

static bool status_matches(unsigned char got, unsigned int want)
{
	unsigned int mask = 0xff;

	if (want & RETRY_ANY)
		mask &= ~HMM_RS_STATUS_RETRY;
	return (got & mask) == (want & mask);
}

static void want_set(unsigned int *want, unsigned long from, unsigned long n,
		     unsigned int v)
{
	while (n--)
		want[from++] = v;
}

/*
 * Decodes status array @st (NULL: none) into counts per reason and
 * compares them with the counts @m returned; checks that those add up to
 * npages and that counts[MIGRATED] is migrated. Logs each difference;
 * returns their number.
 */
static int check_counts(struct __test_metadata *_metadata, const char *what,
			const struct hmm_rs_migrate *m, const unsigned char *st)
{
	uint64_t counts[HMM_RS_NR_REASONS] = { 0 }, sum = 0, i;
	char b[48];
	int bad = 0, r;

	for (r = 0; r < HMM_RS_NR_REASONS; r++)
		sum += m->counts[r];
	if (sum != m->npages) {
		TH_LOG("%s: counts[] add up to %llu, not npages %llu", what,
		       (unsigned long long)sum, (unsigned long long)m->npages);
		bad++;
	}
	if (m->counts[HMM_RS_MIGRATED] != m->migrated) {
		TH_LOG("%s: counts[MIGRATED] %llu, migrated %llu", what,
		       (unsigned long long)m->counts[HMM_RS_MIGRATED],
		       (unsigned long long)m->migrated);
		bad++;
	}
	if (!st)
		return bad;
	for (i = 0; i < m->npages; i++) {
		r = st[i] & HMM_RS_STATUS_REASON;
		if (r < HMM_RS_NR_REASONS) {
			counts[r]++;
			continue;
		}
		if (bad++ < 8)
			TH_LOG("%s: page %llu: status 0x%02x: %s, no such reason",
			       what, (unsigned long long)i, st[i],
			       describe(st[i], b, sizeof(b)));
	}
	for (r = 0; r < HMM_RS_NR_REASONS; r++) {
		if (counts[r] == m->counts[r])
			continue;
		TH_LOG("%s: counts[%s] is %llu, the status array says %llu",
		       what, describe(r, b, sizeof(b)),
		       (unsigned long long)m->counts[r],
		       (unsigned long long)counts[r]);
		bad++;
	}
	return bad;
}

/* Compares each page's status with @want; logs and counts the differences. */
static int check_status(struct __test_metadata *_metadata, const char *what,
			const unsigned char *st, const unsigned int *want,
			unsigned long npages)
{
	char w[48], g[48];
	unsigned long i;
	int bad = 0;

	for (i = 0; i < npages; i++) {
		if (status_matches(st[i], want[i]))
			continue;
		if (bad++ < 16)
			TH_LOG("%s: page %lu: expected %s, got %s (status 0x%02x)",
			       what, i, describe(want[i], w, sizeof(w)),
			       describe(st[i], g, sizeof(g)), st[i]);
	}
	if (bad > 16)
		TH_LOG("%s: %d pages differ", what, bad);
	return bad;
}

/* ---- the ioctl --------------------------------------------------------- */

struct req {
	const char *what;	/* for the log: "s->d on dmirror0" */
	int fd;
	void *addr;
	unsigned long npages;
	uint32_t select;
	uint32_t dst;
	uint32_t flags;
	uint32_t src_dev;	/* with HMM_RS_REQ_SRC_DEV */
};

/*
 * HMM_RS_MIGRATE @r, with status array @st (NULL: none; filled with 0xff
 * first, which no page's status can be). Returns 0 or -errno; the command
 * as the kernel left it in @m.
 */
static int migrate(const struct req *r, unsigned char *st,
		   struct hmm_rs_migrate *m)
{
	*m = (struct hmm_rs_migrate){
		.addr = (uintptr_t)r->addr,
		.npages = r->npages,
		.status = (uintptr_t)st,
		.select = r->select,
		.dst = r->dst,
		.flags = r->flags,
		.src_dev = r->src_dev,
	};
	if (st)
		memset(st, 0xff, r->npages);
	return ioctl(r->fd, HMM_RS_MIGRATE, m) ? -errno : 0;
}

/*
 * HMM_RS_MIGRATE @r, which must succeed with consistent counts and, if
 * @want, each page's status as it says. The command returned in @out.
 */
static void run(struct __test_metadata *_metadata, const struct req *r,
		unsigned char *st, const unsigned int *want,
		struct hmm_rs_migrate *out)
{
	struct hmm_rs_migrate m;
	int ret = migrate(r, st, &m), bad;

	if (ret)
		TH_LOG("%s: returned %s", r->what, errname(-ret));
	ASSERT_EQ(0, ret);
	bad = check_counts(_metadata, r->what, &m, st);
	if (st && want)
		bad += check_status(_metadata, r->what, st, want, r->npages);
	ASSERT_EQ(0, bad);
	if (out)
		*out = m;
}

/* ---- placement and data ------------------------------------------------- */

enum where { ON_PRIVATE, ON_COHERENT, ON_SYSTEM, ON_ZERO_PAGE };

static const char *const where_names[] = {
	"on the device (private)", "on the device (coherent)",
	"not on a device", "the zero page",
};

static bool is_at(unsigned char perm, enum where w)
{
	unsigned char kind = perm & 0xf0;

	if (perm == HMM_DMIRROR_PROT_ERROR)
		return w == ON_SYSTEM;
	switch (w) {
	case ON_PRIVATE:
		return kind == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	case ON_COHERENT:
		return kind == HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL;
	case ON_ZERO_PAGE:
		return kind == HMM_DMIRROR_PROT_ZERO;
	default:
		return kind == HMM_DMIRROR_PROT_NONE ||
		       kind == HMM_DMIRROR_PROT_ZERO;
	}
}

static void snapshot(struct __test_metadata *_metadata, int fd, char *p,
		     unsigned long n, unsigned char *perm)
{
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, perm,
				n, NULL));
}

/* SNAPSHOT through @fd: pages [from, from + n) of @buf are @w. */
static void expect_where(struct __test_metadata *_metadata, const char *what,
			 int fd, char *buf, unsigned long from,
			 unsigned long n, enum where w)
{
	unsigned char perm[n];
	unsigned long i;
	int bad = 0;

	snapshot(_metadata, fd, buf + from * ps, n, perm);
	for (i = 0; i < n; i++) {
		if (is_at(perm[i], w))
			continue;
		if (bad++ < 8)
			TH_LOG("after %s: page %lu: expected %s, snapshot byte 0x%02x",
			       what, from + i, where_names[w], perm[i]);
	}
	ASSERT_EQ(0, bad);
}

/* The byte at @off of page @page for pattern @seed: never 0. */
static unsigned char pat(unsigned long page, size_t off, int seed)
{
	return (page * 31 + off / 16 + seed * 7) % 251 + 1;
}

static void fill(char *buf, unsigned long from, unsigned long n, int seed)
{
	unsigned long pg;
	long off;

	for (pg = from; pg < from + n; pg++)
		for (off = 0; off < ps; off++)
			buf[pg * ps + off] = pat(pg, off, seed);
}

#define ZEROES (-1)

/*
 * With the CPU (device pages fault back): pages [from, from + n) of @buf
 * hold pattern @seed, or zeroes.
 */
static void expect_data(struct __test_metadata *_metadata, char *buf,
			unsigned long from, unsigned long n, int seed)
{
	unsigned long pg;
	int bad = 0;
	long off;

	for (pg = from; pg < from + n; pg++) {
		for (off = 0; off < ps; off++) {
			unsigned char want = seed == ZEROES ? 0 :
					     pat(pg, off, seed);

			if ((unsigned char)buf[pg * ps + off] == want)
				continue;
			if (bad++ < 8)
				TH_LOG("page %lu, byte %ld: 0x%02x, expected 0x%02x",
				       pg, off,
				       (unsigned char)buf[pg * ps + off], want);
			break;
		}
	}
	ASSERT_EQ(0, bad);
}

/*
 * Reads a byte of each page of [from, from + n) (maps the zero page where
 * nothing is mapped): returns their sum.
 */
static unsigned long read_pages(char *buf, unsigned long from,
				unsigned long n)
{
	unsigned long pg, sum = 0;

	for (pg = from; pg < from + n; pg++)
		sum += (unsigned char)__atomic_load_n(buf + pg * ps,
						      __ATOMIC_RELAXED);
	return sum;
}

/* ---- setting the scene -------------------------------------------------- */

/* @n pages of private anonymous memory, small pages only. */
static char *anon(unsigned long n)
{
	char *p = mmap(NULL, n * ps, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, n * ps, MADV_NOHUGEPAGE);
	return p;
}

/* Pages [from, from + n) of @buf to @fd's device, by the legacy ioctl. */
static void legacy_to_dev(struct __test_metadata *_metadata, int fd,
			  char *buf, unsigned long from, unsigned long n)
{
	struct hmm_dmirror_cmd c;
	char *bounce = malloc(n * ps);
	int ret;

	ASSERT_NE(NULL, bounce);
	ret = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
			 (uintptr_t)(buf + from * ps), bounce, n, &c);
	free(bounce);
	if (ret)
		TH_LOG("MIGRATE_TO_DEV of pages %lu-%lu: %s", from,
		       from + n - 1, errname(-ret));
	ASSERT_EQ(0, ret);
	ASSERT_EQ(n, c.cpages);
}

/*
 * Pins [@p, @p + @n pages) through gup_test (FOLL_PIN | FOLL_LONGTERM, as
 * a device driver would for DMA): returns the file that holds the pin
 * (closing it unpins), or -errno.
 */
static int pin(char *p, unsigned long n)
{
	struct pin_longterm_test args = {
		.addr = (uintptr_t)p,
		.size = n * ps,
	};
	int fd = open(GUP_TEST, O_RDWR), err;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, PIN_LONGTERM_TEST_START, &args)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int unpin(int fd)
{
	int ret = ioctl(fd, PIN_LONGTERM_TEST_STOP) ? -errno : 0;

	close(fd);
	return ret;
}

/* ---- migrate: one kind of page per test --------------------------------- */

FIXTURE(migrate)
{
	int fd[2];		/* dmirror0, dmirror1 */
	char *buf;
	unsigned char st[NPAGES];
	unsigned int want[NPAGES];
};

FIXTURE_VARIANT(migrate)
{
	uint32_t dst;
	uint32_t select;
	const char *what;
};

FIXTURE_VARIANT_ADD(migrate, s2d)
{
	.dst = HMM_RS_DST_DEVICE,
	.select = HMM_RS_SELECT_SYSTEM,
	.what = "s->d on dmirror0",
};

FIXTURE_VARIANT_ADD(migrate, d2s)
{
	.dst = HMM_RS_DST_SYSTEM,
	.select = HMM_RS_SELECT_DEVICE_PRIVATE,
	.what = "d->s (DEVICE_PRIVATE) on dmirror0",
};

FIXTURE_VARIANT_ADD(migrate, d2s_any)
{
	.dst = HMM_RS_DST_SYSTEM,
	.select = HMM_RS_SELECT_DEVICE_PRIVATE | HMM_RS_SELECT_DEVICE_COHERENT,
	.what = "d->s (DEVICE_PRIVATE|DEVICE_COHERENT) on dmirror0",
};

#define TO_DEVICE(v) ((v)->dst == HMM_RS_DST_DEVICE)

FIXTURE_SETUP(migrate)
{
	int i;

	for (i = 0; i < 2; i++) {
		self->fd[i] = open(devices[i], O_RDWR);
		ASSERT_GE(self->fd[i], 0);
	}
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(migrate)
{
	munmap(self->buf, NPAGES * ps);
	close(self->fd[0]);
	close(self->fd[1]);
}

/* A request on all NPAGES pages of @buf. */
static struct req whole_buf(const char *what, int fd, char *buf,
			    uint32_t select, uint32_t dst)
{
	return (struct req){
		.what = what,
		.fd = fd,
		.addr = buf,
		.npages = NPAGES,
		.select = select,
		.dst = dst,
	};
}

/*
 * The variant's request on the buffer, through dmirror0. The parameters'
 * types are FIXTURE_DATA(migrate) and FIXTURE_VARIANT(migrate), spelled
 * out as the harness defines them (checkpatch takes the macros for
 * expressions).
 */
static struct req variant_req(const struct _test_data_migrate *self,
			      const struct _fixture_variant_migrate *variant)
{
	return whole_buf(variant->what, self->fd[0], self->buf,
			 variant->select, variant->dst);
}

TEST_F(migrate, written)
{
	struct req r = variant_req(self, variant);

	fill(self->buf, 0, NPAGES, 1);
	want_set(self->want, 0, NPAGES, TO_DEVICE(variant) ?
		 HMM_RS_MIGRATED : HMM_RS_NOT_SELECTED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, NPAGES,
		     TO_DEVICE(variant) ? ON_PRIVATE : ON_SYSTEM);
	expect_data(_metadata, self->buf, 0, NPAGES, 1);
}

TEST_F(migrate, holes)
{
	struct req r = variant_req(self, variant);

	want_set(self->want, 0, NPAGES, TO_DEVICE(variant) ?
		 HMM_RS_MIGRATED : WANT_NOT_PRESENT);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, NPAGES,
		     TO_DEVICE(variant) ? ON_PRIVATE : ON_SYSTEM);
	expect_data(_metadata, self->buf, 0, NPAGES, ZEROES);
}

TEST_F(migrate, zero_pages)
{
	struct req r = variant_req(self, variant);

	ASSERT_EQ(0, read_pages(self->buf, 0, NPAGES));
	expect_where(_metadata, "reading", self->fd[0], self->buf, 0, NPAGES,
		     ON_ZERO_PAGE);
	want_set(self->want, 0, NPAGES, TO_DEVICE(variant) ?
		 HMM_RS_MIGRATED : HMM_RS_ZERO_PAGE);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, NPAGES,
		     TO_DEVICE(variant) ? ON_PRIVATE : ON_ZERO_PAGE);
	expect_data(_metadata, self->buf, 0, NPAGES, ZEROES);
}

TEST_F(migrate, own_pages)
{
	struct req r = variant_req(self, variant);

	fill(self->buf, 0, NPAGES, 2);
	legacy_to_dev(_metadata, self->fd[0], self->buf, 0, NPAGES);
	expect_where(_metadata, "MIGRATE_TO_DEV", self->fd[0], self->buf, 0,
		     NPAGES, ON_PRIVATE);
	if (TO_DEVICE(variant)) {
		/* Its own device pages are not system memory. */
		want_set(self->want, 0, NPAGES, HMM_RS_NOT_SELECTED);
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd[0], self->buf, 0,
			     NPAGES, ON_PRIVATE);
	} else {
		struct req coherent = r;

		coherent.what = "d->s (DEVICE_COHERENT) on dmirror0";
		coherent.select = HMM_RS_SELECT_DEVICE_COHERENT;
		want_set(self->want, 0, NPAGES, HMM_RS_NOT_SELECTED);
		run(_metadata, &coherent, self->st, self->want, NULL);
		expect_where(_metadata, coherent.what, self->fd[0], self->buf,
			     0, NPAGES, ON_PRIVATE);
		want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd[0], self->buf, 0,
			     NPAGES, ON_SYSTEM);
	}
	expect_data(_metadata, self->buf, 0, NPAGES, 2);
}

TEST_F(migrate, other_owner)
{
	struct req r = variant_req(self, variant);

	fill(self->buf, 0, NPAGES, 3);
	legacy_to_dev(_metadata, self->fd[1], self->buf, 0, NPAGES);
	expect_where(_metadata, "MIGRATE_TO_DEV on dmirror1", self->fd[1],
		     self->buf, 0, NPAGES, ON_PRIVATE);
	want_set(self->want, 0, NPAGES, WANT_NOT_PRESENT);
	run(_metadata, &r, self->st, self->want, NULL);
	/* Still on dmirror1, as dmirror1 sees it. */
	expect_where(_metadata, r.what, self->fd[1], self->buf, 0, NPAGES,
		     ON_PRIVATE);
	expect_data(_metadata, self->buf, 0, NPAGES, 3);
}

/* Pages 4-11 only: they move, the others stay where they were. */
TEST_F(migrate, subrange)
{
	struct req r = variant_req(self, variant);
	enum where before = TO_DEVICE(variant) ? ON_SYSTEM : ON_PRIVATE;
	enum where after = TO_DEVICE(variant) ? ON_PRIVATE : ON_SYSTEM;

	fill(self->buf, 0, NPAGES, 4);
	if (!TO_DEVICE(variant))
		legacy_to_dev(_metadata, self->fd[0], self->buf, 0, NPAGES);
	r.addr = self->buf + 4 * ps;
	r.npages = 8;
	want_set(self->want, 0, 8, HMM_RS_MIGRATED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, 4, before);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 4, 8, after);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 12, 4, before);
	expect_data(_metadata, self->buf, 0, NPAGES, 4);
}

/* No status array: the counts alone. */
TEST_F(migrate, status_null)
{
	struct req r = variant_req(self, variant);
	struct hmm_rs_migrate m;

	fill(self->buf, 0, NPAGES, 5);
	if (!TO_DEVICE(variant))
		legacy_to_dev(_metadata, self->fd[0], self->buf, 0, NPAGES);
	run(_metadata, &r, NULL, NULL, &m);
	ASSERT_EQ(NPAGES, m.migrated);
	ASSERT_EQ(NPAGES, m.counts[HMM_RS_MIGRATED]);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, NPAGES,
		     TO_DEVICE(variant) ? ON_PRIVATE : ON_SYSTEM);
	expect_data(_metadata, self->buf, 0, NPAGES, 5);
}

/* ---- coherent: device-coherent memory, dmirror2 and dmirror3 ------------ */

FIXTURE(coherent)
{
	int fd[4];		/* dmirror0, -, dmirror2, dmirror3 */
	char *buf;
	unsigned char st[NPAGES];
	unsigned int want[NPAGES];
};

FIXTURE_VARIANT(coherent)
{
	uint32_t dst;
	uint32_t select;
	const char *what;
};

FIXTURE_VARIANT_ADD(coherent, s2d)
{
	.dst = HMM_RS_DST_DEVICE,
	.select = HMM_RS_SELECT_SYSTEM,
	.what = "s->d on dmirror2",
};

FIXTURE_VARIANT_ADD(coherent, d2s)
{
	.dst = HMM_RS_DST_SYSTEM,
	.select = HMM_RS_SELECT_DEVICE_COHERENT,
	.what = "d->s (DEVICE_COHERENT) on dmirror2",
};

FIXTURE_SETUP(coherent)
{
	self->fd[1] = -1;
	self->fd[2] = open(devices[2], O_RDWR);
	if (self->fd[2] < 0 && errno == ENOENT)
		SKIP(return, "no %s: device-coherent memory needs the module's spm_addr_dev0/1",
		     devices[2]);
	ASSERT_GE(self->fd[2], 0);
	self->fd[3] = open(devices[3], O_RDWR);
	ASSERT_GE(self->fd[3], 0);
	self->fd[0] = open(devices[0], O_RDWR);
	ASSERT_GE(self->fd[0], 0);
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(coherent)
{
	munmap(self->buf, NPAGES * ps);
	close(self->fd[0]);
	close(self->fd[2]);
	close(self->fd[3]);
}

/*
 * The variant's request on the buffer, through dmirror2 (the types: as
 * variant_req()'s).
 */
static struct req coherent_req(const struct _test_data_coherent *self,
			       const struct _fixture_variant_coherent *variant)
{
	return whole_buf(variant->what, self->fd[2], self->buf,
			 variant->select, variant->dst);
}

TEST_F(coherent, written)
{
	struct req r = coherent_req(self, variant);

	fill(self->buf, 0, NPAGES, 6);
	want_set(self->want, 0, NPAGES, TO_DEVICE(variant) ?
		 HMM_RS_MIGRATED : HMM_RS_NOT_SELECTED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[2], self->buf, 0, NPAGES,
		     TO_DEVICE(variant) ? ON_COHERENT : ON_SYSTEM);
	expect_data(_metadata, self->buf, 0, NPAGES, 6);
}

TEST_F(coherent, own_pages)
{
	struct req r = coherent_req(self, variant);

	fill(self->buf, 0, NPAGES, 7);
	legacy_to_dev(_metadata, self->fd[2], self->buf, 0, NPAGES);
	expect_where(_metadata, "MIGRATE_TO_DEV on dmirror2", self->fd[2],
		     self->buf, 0, NPAGES, ON_COHERENT);
	if (TO_DEVICE(variant)) {
		want_set(self->want, 0, NPAGES, HMM_RS_NOT_SELECTED);
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd[2], self->buf, 0,
			     NPAGES, ON_COHERENT);
	} else {
		struct req private = r;

		private.what = "d->s (DEVICE_PRIVATE) on dmirror2";
		private.select = HMM_RS_SELECT_DEVICE_PRIVATE;
		want_set(self->want, 0, NPAGES, HMM_RS_NOT_SELECTED);
		run(_metadata, &private, self->st, self->want, NULL);
		expect_where(_metadata, private.what, self->fd[2], self->buf,
			     0, NPAGES, ON_COHERENT);
		want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd[2], self->buf, 0,
			     NPAGES, ON_SYSTEM);
	}
	expect_data(_metadata, self->buf, 0, NPAGES, 7);
}

/*
 * dmirror2's pages through dmirror3 (the same direction), and s2d also
 * through dmirror0 (device-private): present in the page table, someone
 * else's.
 */
TEST_F(coherent, other_owner)
{
	struct req r = coherent_req(self, variant);

	fill(self->buf, 0, NPAGES, 8);
	legacy_to_dev(_metadata, self->fd[2], self->buf, 0, NPAGES);
	expect_where(_metadata, "MIGRATE_TO_DEV on dmirror2", self->fd[2],
		     self->buf, 0, NPAGES, ON_COHERENT);
	want_set(self->want, 0, NPAGES, HMM_RS_OTHER_OWNER);
	if (TO_DEVICE(variant)) {
		r.what = "s->d on dmirror0";
		r.fd = self->fd[0];
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd[2], self->buf, 0,
			     NPAGES, ON_COHERENT);
		r.what = "s->d on dmirror3";
	} else {
		r.what = "d->s (DEVICE_COHERENT) on dmirror3";
	}
	r.fd = self->fd[3];
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[2], self->buf, 0, NPAGES,
		     ON_COHERENT);
	expect_data(_metadata, self->buf, 0, NPAGES, 8);
}

/* ---- d2d: another device's pages straight to this one -------------------- */

FIXTURE(d2d)
{
	int src, dst;
	char *buf;
	unsigned char st[NPAGES];
	unsigned int want[NPAGES];
};

FIXTURE_VARIANT(d2d)
{
	int src, dst;		/* device numbers */
};

FIXTURE_VARIANT_ADD(d2d, private_to_private) { .src = 1, .dst = 0 };
FIXTURE_VARIANT_ADD(d2d, coherent_to_coherent) { .src = 2, .dst = 3 };
FIXTURE_VARIANT_ADD(d2d, private_to_coherent) { .src = 1, .dst = 2 };
FIXTURE_VARIANT_ADD(d2d, coherent_to_private) { .src = 3, .dst = 0 };

/* Device-private memory: dmirror0 and 1. */
#define PRIVATE(dev) ((dev) < 2)

FIXTURE_SETUP(d2d)
{
	self->src = open(devices[variant->src], O_RDWR);
	ASSERT_GE(self->src, 0);
	self->dst = open(devices[variant->dst], O_RDWR);
	ASSERT_GE(self->dst, 0);
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(d2d)
{
	munmap(self->buf, NPAGES * ps);
	close(self->src);
	close(self->dst);
}

/*
 * Pages on the source device move to the destination device in one call,
 * without a bounce through system memory: on the destination afterwards
 * (and no longer on the source), every byte intact; then back to system
 * memory through the destination, which now owns them.
 */
TEST_F(d2d, moves)
{
	struct req r = {
		.what = "d->d",
		.fd = self->dst,
		.addr = self->buf,
		.npages = NPAGES,
		.select = PRIVATE(variant->src) ? HMM_RS_SELECT_DEVICE_PRIVATE :
						  HMM_RS_SELECT_DEVICE_COHERENT,
		.dst = HMM_RS_DST_DEVICE,
		.flags = HMM_RS_REQ_SRC_DEV,
		.src_dev = variant->src,
	};
	enum where on_dst = PRIVATE(variant->dst) ? ON_PRIVATE : ON_COHERENT;

	fill(self->buf, 0, NPAGES, 11);
	legacy_to_dev(_metadata, self->src, self->buf, 0, NPAGES);
	expect_where(_metadata, "MIGRATE_TO_DEV on the source", self->src,
		     self->buf, 0, NPAGES,
		     PRIVATE(variant->src) ? ON_PRIVATE : ON_COHERENT);
	want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, "d->d, as the destination sees it", self->dst,
		     self->buf, 0, NPAGES, on_dst);
	/* A coherent page of the destination is a remote one to the source. */
	if (PRIVATE(variant->dst))
		expect_where(_metadata, "d->d, as the source sees it",
			     self->src, self->buf, 0, NPAGES, ON_SYSTEM);

	/*
	 * A second time: nothing of the source's is left. The destination's
	 * pages are another owner's: seen if coherent, not if private.
	 */
	want_set(self->want, 0, NPAGES, PRIVATE(variant->dst) ?
		 WANT_NOT_PRESENT : HMM_RS_OTHER_OWNER);
	run(_metadata, &r, self->st, self->want, NULL);

	r.what = "d->s of the moved pages";
	r.select = PRIVATE(variant->dst) ? HMM_RS_SELECT_DEVICE_PRIVATE :
					   HMM_RS_SELECT_DEVICE_COHERENT;
	r.dst = HMM_RS_DST_SYSTEM;
	r.flags = 0;
	r.src_dev = 0;
	want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->dst, self->buf, 0, NPAGES,
		     ON_SYSTEM);
	expect_data(_metadata, self->buf, 0, NPAGES, 11);
}

/* ---- reasons: a page that stays, then the same request again ------------ */

enum hold { HOLD_PIN, HOLD_SPLICE, HOLD_FAIL_ALLOC, HOLD_FILE };

FIXTURE(reasons)
{
	int fd;
	int memfd;
	int gup;		/* holds the pin */
	int pipe[2];
	char *buf;
	unsigned char st[NPAGES];
	unsigned int want[NPAGES];
};

FIXTURE_VARIANT(reasons)
{
	enum hold hold;
};

FIXTURE_VARIANT_ADD(reasons, pinned) { .hold = HOLD_PIN };
FIXTURE_VARIANT_ADD(reasons, busy) { .hold = HOLD_SPLICE };
FIXTURE_VARIANT_ADD(reasons, no_memory) { .hold = HOLD_FAIL_ALLOC };
FIXTURE_VARIANT_ADD(reasons, file_backed) { .hold = HOLD_FILE };

FIXTURE_SETUP(reasons)
{
	self->memfd = -1;
	self->gup = -1;
	self->pipe[0] = -1;
	self->pipe[1] = -1;
	self->fd = open(devices[0], O_RDWR);
	ASSERT_GE(self->fd, 0);
	if (variant->hold == HOLD_FILE) {
		self->memfd = memfd_create("hmm-rs-migrate", 0);
		ASSERT_GE(self->memfd, 0);
		ASSERT_EQ(0, ftruncate(self->memfd, NPAGES * ps));
		self->buf = mmap(NULL, NPAGES * ps, PROT_READ | PROT_WRITE,
				 MAP_SHARED, self->memfd, 0);
		ASSERT_NE(MAP_FAILED, self->buf);
	} else {
		self->buf = anon(NPAGES);
		ASSERT_NE(NULL, self->buf);
	}
	fill(self->buf, 0, NPAGES, 9);
}

FIXTURE_TEARDOWN(reasons)
{
	if (self->gup >= 0)
		unpin(self->gup);
	if (self->pipe[0] >= 0) {
		close(self->pipe[0]);
		close(self->pipe[1]);
	}
	munmap(self->buf, NPAGES * ps);
	if (self->memfd >= 0)
		close(self->memfd);
	close(self->fd);
}

/* Reads the pipe empty: its buffers' page references go. */
static void drain(struct __test_metadata *_metadata, int fd)
{
	size_t len = NPAGES * ps, got = 0;
	char *data = malloc(len);
	ssize_t n;

	ASSERT_NE(NULL, data);
	while (got < len) {
		n = read(fd, data + got, len - got);
		ASSERT_LT(0, n);
		got += n;
	}
	/* What the pipe held is what the pages held. */
	expect_data(_metadata, data, 0, NPAGES, 9);
	free(data);
}

TEST_F(reasons, then_retry)
{
	struct req r = {
		.what = "s->d on dmirror0",
		.fd = self->fd,
		.addr = self->buf,
		.npages = NPAGES,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
	};
	struct iovec iov = { .iov_base = self->buf, .iov_len = NPAGES * ps };
	long i, failed = -1;
	ssize_t n;

	switch (variant->hold) {
	case HOLD_PIN:
		self->gup = pin(self->buf, NPAGES);
		if (self->gup == -ENOENT)
			SKIP(return, "no %s (CONFIG_GUP_TEST, debugfs)",
			     GUP_TEST);
		if (self->gup < 0)
			TH_LOG("PIN_LONGTERM_TEST_START: %s",
			       errname(-self->gup));
		ASSERT_LE(0, self->gup);
		want_set(self->want, 0, NPAGES, HMM_RS_PINNED);
		break;
	case HOLD_SPLICE:
		/* Page references in the pipe: no SPLICE_F_GIFT. */
		ASSERT_EQ(0, pipe(self->pipe));
		fcntl(self->pipe[1], F_SETPIPE_SZ, NPAGES * ps);
		n = vmsplice(self->pipe[1], &iov, 1, SPLICE_F_NONBLOCK);
		if (n != NPAGES * ps)
			TH_LOG("vmsplice: %zd of %ld bytes (%s)", n,
			       NPAGES * ps, n < 0 ? errname(errno) : "short");
		ASSERT_EQ(NPAGES * ps, n);
		want_set(self->want, 0, NPAGES,
			 HMM_RS_BUSY | HMM_RS_STATUS_RETRY);
		break;
	case HOLD_FAIL_ALLOC:
		/* Fails the next device allocation (one page). */
		ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_FLAGS,
					(uintptr_t)self->buf, NULL,
					HMM_DMIRROR_FLAG_FAIL_ALLOC, NULL));
		break;
	case HOLD_FILE:
		want_set(self->want, 0, NPAGES, HMM_RS_FILE_BACKED);
		break;
	}

	if (variant->hold == HOLD_FAIL_ALLOC) {
		/* Which page's allocation fails is the driver's call. */
		run(_metadata, &r, self->st, NULL, NULL);
		for (i = 0; i < NPAGES && failed < 0; i++)
			if (self->st[i] != HMM_RS_MIGRATED)
				failed = i;
		if (failed < 0)
			TH_LOG("%s: all %d pages MIGRATED, expected one NO_MEMORY|RETRY",
			       r.what, NPAGES);
		ASSERT_LE(0, failed);
		want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
		self->want[failed] = HMM_RS_NO_MEMORY | HMM_RS_STATUS_RETRY;
		ASSERT_EQ(0, check_status(_metadata, r.what, self->st,
					  self->want, NPAGES));
		expect_where(_metadata, r.what, self->fd, self->buf, failed, 1,
			     ON_SYSTEM);
	} else {
		run(_metadata, &r, self->st, self->want, NULL);
		expect_where(_metadata, r.what, self->fd, self->buf, 0, NPAGES,
			     ON_SYSTEM);
	}

	/* What held the pages lets go; the same request again. */
	r.what = "s->d on dmirror0, again";
	switch (variant->hold) {
	case HOLD_PIN:
		ASSERT_EQ(0, unpin(self->gup));
		self->gup = -1;
		want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
		break;
	case HOLD_SPLICE:
		drain(_metadata, self->pipe[0]);
		want_set(self->want, 0, NPAGES, HMM_RS_MIGRATED);
		break;
	case HOLD_FAIL_ALLOC:
		/* The others are on the device by now. */
		want_set(self->want, 0, NPAGES, HMM_RS_NOT_SELECTED);
		self->want[failed] = HMM_RS_MIGRATED;
		break;
	case HOLD_FILE:
		break;
	}
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd, self->buf, 0, NPAGES,
		     variant->hold == HOLD_FILE ? ON_SYSTEM : ON_PRIVATE);
	expect_data(_metadata, self->buf, 0, NPAGES, 9);
}

/* ---- thp: a transparent huge page, whole or split ----------------------- */

struct thp_buf {
	int fd;
	size_t size;
	unsigned long npages;
	char *buf;		/* @size, aligned: one VMA, one THP */
	unsigned char *st;
	unsigned int *want;
};

FIXTURE(thp)
{
	struct thp_buf t;
};

FIXTURE_VARIANT(thp)
{
	uint32_t flags;		/* of the migration to the device */
};

FIXTURE_VARIANT_ADD(thp, whole) { .flags = HMM_RS_REQ_THP };
FIXTURE_VARIANT_ADD(thp, split) { .flags = 0 };

static unsigned long read_ulong(const char *path, unsigned long def)
{
	unsigned long v;
	FILE *f = fopen(path, "r");

	if (!f)
		return def;
	if (fscanf(f, "%lu", &v) != 1)
		v = def;
	fclose(f);
	return v;
}

FIXTURE_SETUP(thp)
{
	struct thp_buf *t = &self->t;
	long kb;

	t->size = read_ulong("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
			     2UL << 20);
	t->npages = t->size / ps;
	t->buf = NULL;
	if (!hmm_rs_thp_enabled())
		SKIP(return, "no THP: transparent_hugepage/enabled is never, or absent");
	t->fd = open(devices[0], O_RDWR);
	ASSERT_GE(t->fd, 0);
	t->st = malloc(t->npages);
	t->want = malloc(t->npages * sizeof(*t->want));
	ASSERT_NE(NULL, t->st);
	ASSERT_NE(NULL, t->want);
	t->buf = hmm_rs_huge_map(t->size);
	ASSERT_NE(NULL, t->buf);
	fill(t->buf, 0, t->npages, 10);
	kb = hmm_rs_anon_huge_kb(t->buf);
	if (kb < (long)(t->size >> 10)) {
		madvise(t->buf, t->size, MADV_COLLAPSE);
		kb = hmm_rs_anon_huge_kb(t->buf);
	}
	if (kb < (long)(t->size >> 10))
		SKIP(return, "no THP for the buffer: AnonHugePages %ld kB after MADV_COLLAPSE",
		     kb);
}

FIXTURE_TEARDOWN(thp)
{
	struct thp_buf *t = &self->t;

	if (t->buf)
		munmap(t->buf, t->size);
	free(t->st);
	free(t->want);
	close(t->fd);
}

/*
 * To the device with @to_flags, back with @back_flags. WHOLE: with
 * HMM_RS_REQ_THP, of a huge page; the device holds one only if it got it
 * whole. Back whole would be a device-private THP collected whole, which
 * MigrateVma::setup() avoids on 7.3 (patches/README: zap_huge_pmd()): it
 * comes back page by page, without WHOLE, whatever the request, and the
 * status says so (the THP policy's fallback).
 */
static void thp_roundtrip(struct __test_metadata *_metadata,
			  struct thp_buf *t, uint32_t to_flags,
			  uint32_t back_flags)
{
	bool whole = to_flags & HMM_RS_REQ_THP;
	struct req r = {
		.what = whole ? "s->d on dmirror0, REQ_THP" :
				"s->d on dmirror0",
		.fd = t->fd,
		.addr = t->buf,
		.npages = t->npages,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
		.flags = to_flags,
	};

	want_set(t->want, 0, t->npages, HMM_RS_MIGRATED |
		 (whole ? HMM_RS_STATUS_WHOLE : 0));
	run(_metadata, &r, t->st, t->want, NULL);
	expect_where(_metadata, r.what, t->fd, t->buf, 0, t->npages,
		     ON_PRIVATE);

	whole = false;
	r.what = back_flags ? "d->s (DEVICE_PRIVATE) on dmirror0, REQ_THP" :
			      "d->s (DEVICE_PRIVATE) on dmirror0";
	r.select = HMM_RS_SELECT_DEVICE_PRIVATE;
	r.dst = HMM_RS_DST_SYSTEM;
	r.flags = back_flags;
	want_set(t->want, 0, t->npages, HMM_RS_MIGRATED |
		 (whole ? HMM_RS_STATUS_WHOLE : 0));
	run(_metadata, &r, t->st, t->want, NULL);
	expect_where(_metadata, r.what, t->fd, t->buf, 0, t->npages,
		     ON_SYSTEM);
	expect_data(_metadata, t->buf, 0, t->npages, 10);
}

TEST_F(thp, back_whole)
{
	thp_roundtrip(_metadata, &self->t, variant->flags, HMM_RS_REQ_THP);
}

TEST_F(thp, back_split)
{
	thp_roundtrip(_metadata, &self->t, variant->flags, 0);
}

/* ---- mixed: every kind of page in one call ------------------------------ */

/* The mixed buffer, page by page. */
enum {
	MX_HOLE = 0,		/* 0-2: never touched */
	MX_ZERO = 3,		/* 3-5: read: the zero page */
	MX_WRITTEN = 6,		/* 6-8: written */
	MX_OWN = 9,		/* 9-10: on dmirror0 */
	MX_OTHER = 11,		/* 11-12: on dmirror1 */
	MX_PINNED = 13,		/* 13: written; pinned for s2d */
	MX_TAIL = 14,		/* 14-15: written */
};

FIXTURE(mixed)
{
	int fd[2];
	int gup;
	char *buf;
	unsigned char st[NPAGES];
	unsigned int want[NPAGES];
};

FIXTURE_SETUP(mixed)
{
	int i;

	self->gup = -1;
	for (i = 0; i < 2; i++) {
		self->fd[i] = open(devices[i], O_RDWR);
		ASSERT_GE(self->fd[i], 0);
	}
	self->buf = anon(NPAGES);
	ASSERT_NE(NULL, self->buf);
	fill(self->buf, MX_WRITTEN, NPAGES - MX_WRITTEN, 11);
	legacy_to_dev(_metadata, self->fd[0], self->buf, MX_OWN, 2);
	legacy_to_dev(_metadata, self->fd[1], self->buf, MX_OTHER, 2);
	ASSERT_EQ(0, read_pages(self->buf, MX_ZERO, 3));
	expect_where(_metadata, "setup", self->fd[0], self->buf, MX_ZERO, 3,
		     ON_ZERO_PAGE);
	expect_where(_metadata, "setup", self->fd[0], self->buf, MX_OWN, 2,
		     ON_PRIVATE);
	expect_where(_metadata, "setup", self->fd[1], self->buf, MX_OTHER, 2,
		     ON_PRIVATE);
}

FIXTURE_TEARDOWN(mixed)
{
	if (self->gup >= 0)
		unpin(self->gup);
	munmap(self->buf, NPAGES * ps);
	close(self->fd[0]);
	close(self->fd[1]);
}

static void mixed_data(struct __test_metadata *_metadata, char *buf)
{
	expect_data(_metadata, buf, 0, MX_WRITTEN, ZEROES);
	expect_data(_metadata, buf, MX_WRITTEN, NPAGES - MX_WRITTEN, 11);
}

TEST_F(mixed, s2d)
{
	struct req r = {
		.what = "s->d on dmirror0",
		.fd = self->fd[0],
		.addr = self->buf,
		.npages = NPAGES,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
	};

	self->gup = pin(self->buf + MX_PINNED * ps, 1);
	if (self->gup == -ENOENT)
		SKIP(return, "no %s (CONFIG_GUP_TEST, debugfs)", GUP_TEST);
	ASSERT_LE(0, self->gup);
	want_set(self->want, MX_HOLE, 3, HMM_RS_MIGRATED);
	want_set(self->want, MX_ZERO, 3, HMM_RS_MIGRATED);
	want_set(self->want, MX_WRITTEN, 3, HMM_RS_MIGRATED);
	want_set(self->want, MX_OWN, 2, HMM_RS_NOT_SELECTED);
	want_set(self->want, MX_OTHER, 2, WANT_NOT_PRESENT);
	want_set(self->want, MX_PINNED, 1, HMM_RS_PINNED);
	want_set(self->want, MX_TAIL, 2, HMM_RS_MIGRATED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, 0, MX_OTHER,
		     ON_PRIVATE);
	expect_where(_metadata, r.what, self->fd[1], self->buf, MX_OTHER, 2,
		     ON_PRIVATE);
	expect_where(_metadata, r.what, self->fd[0], self->buf, MX_PINNED, 1,
		     ON_SYSTEM);
	expect_where(_metadata, r.what, self->fd[0], self->buf, MX_TAIL, 2,
		     ON_PRIVATE);
	mixed_data(_metadata, self->buf);
}

TEST_F(mixed, d2s)
{
	struct req r = {
		.what = "d->s (DEVICE_PRIVATE) on dmirror0",
		.fd = self->fd[0],
		.addr = self->buf,
		.npages = NPAGES,
		.select = HMM_RS_SELECT_DEVICE_PRIVATE,
		.dst = HMM_RS_DST_SYSTEM,
	};

	want_set(self->want, MX_HOLE, 3, WANT_NOT_PRESENT);
	want_set(self->want, MX_ZERO, 3, HMM_RS_ZERO_PAGE);
	want_set(self->want, MX_WRITTEN, 3, HMM_RS_NOT_SELECTED);
	want_set(self->want, MX_OWN, 2, HMM_RS_MIGRATED);
	want_set(self->want, MX_OTHER, 2, WANT_NOT_PRESENT);
	want_set(self->want, MX_PINNED, 3, HMM_RS_NOT_SELECTED);
	run(_metadata, &r, self->st, self->want, NULL);
	expect_where(_metadata, r.what, self->fd[0], self->buf, MX_ZERO, 3,
		     ON_ZERO_PAGE);
	expect_where(_metadata, r.what, self->fd[0], self->buf, MX_WRITTEN, 5,
		     ON_SYSTEM);
	expect_where(_metadata, r.what, self->fd[1], self->buf, MX_OTHER, 2,
		     ON_PRIVATE);
	expect_where(_metadata, r.what, self->fd[0], self->buf, MX_PINNED, 3,
		     ON_SYSTEM);
	mixed_data(_metadata, self->buf);
}

/* ---- bad_input: rejected, and nothing changes --------------------------- */

/* The range: the buffer, NPAGES pages nobody maps, the buffer and one page
 * more that is unmapped or PROT_NONE, NPAGES pages ending at 2^64.
 */
enum { R_BUF, R_HOLE, R_TAIL_HOLE, R_TAIL_PROT_NONE, R_TOP };
/* npages: as the range says, 0, more than 2^64 bytes, 2^64 bytes more. */
enum { NP_RANGE, NP_ZERO, NP_HUGE, NP_WRAP };
/* The status array: the buffer's, none, read-only, read-only at its end. */
enum { S_OK, S_NULL, S_READONLY, S_STRADDLE, S_LOW };

FIXTURE(bad_input)
{
	int fd;
	char *buf;		/* NPAGES + 1; pages 8-15 on dmirror0 */
	char *hole;
	unsigned char *st;	/* a writable page, then a read-only one */
	unsigned char before[NPAGES];
};

FIXTURE_VARIANT(bad_input)
{
	uint32_t select;
	uint32_t dst;
	uint32_t flags;
	uint32_t src_dev;
	unsigned int addr_off;
	int range;
	int npages;
	int status;
	bool arg_null;		/* the command itself at NULL */
	int err;
};

#define S2D .select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_DEVICE
#define D2S .select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_SYSTEM

FIXTURE_VARIANT_ADD(bad_input, select_bit3)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE | 1U << 3,
	.dst = HMM_RS_DST_SYSTEM, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, select_bit31)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE | 1U << 31,
	.dst = HMM_RS_DST_SYSTEM, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, select_bit3_to_device)
{
	.select = HMM_RS_SELECT_SYSTEM | 1U << 3,
	.dst = HMM_RS_DST_DEVICE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, select_zero)
{
	.select = 0, .dst = HMM_RS_DST_SYSTEM, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, select_zero_to_device)
{
	.select = 0, .dst = HMM_RS_DST_DEVICE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, flags_bit3)
{
	S2D, .flags = 1U << 3, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, fault_without_system)
{
	D2S, .flags = HMM_RS_REQ_FAULT, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, src_dev_is_this_device)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_DEVICE,
	.flags = HMM_RS_REQ_SRC_DEV, .src_dev = 0, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, src_dev_does_not_exist)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE, .dst = HMM_RS_DST_DEVICE,
	.flags = HMM_RS_REQ_SRC_DEV, .src_dev = 9, .err = ENODEV,
};

FIXTURE_VARIANT_ADD(bad_input, src_dev_to_device_with_system)
{
	.select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_DEVICE,
	.flags = HMM_RS_REQ_SRC_DEV, .src_dev = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, flags_bit31)
{
	D2S, .flags = 1U << 31, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, src_dev_without_the_flag)
{
	S2D, .src_dev = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, dst_3)
{
	.select = HMM_RS_SELECT_SYSTEM, .dst = 3, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, to_device_private)
{
	.select = HMM_RS_SELECT_DEVICE_PRIVATE,
	.dst = HMM_RS_DST_DEVICE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, to_device_all)
{
	.select = HMM_RS_SELECT_ALL, .dst = HMM_RS_DST_DEVICE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, to_system_system)
{
	.select = HMM_RS_SELECT_SYSTEM, .dst = HMM_RS_DST_SYSTEM,
	.err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, to_system_all)
{
	.select = HMM_RS_SELECT_ALL, .dst = HMM_RS_DST_SYSTEM, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, unaligned_addr)
{
	S2D, .addr_off = 1, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, unaligned_addr_d2s)
{
	D2S, .addr_off = 2048, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, npages_zero)
{
	S2D, .npages = NP_ZERO, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, npages_overflow)
{
	S2D, .npages = NP_HUGE, .status = S_NULL, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, npages_wrap)
{
	S2D, .npages = NP_WRAP, .status = S_NULL, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, ends_at_top)
{
	S2D, .range = R_TOP, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, unmapped)
{
	S2D, .range = R_HOLE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, unmapped_d2s)
{
	D2S, .range = R_HOLE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, partly_unmapped)
{
	S2D, .range = R_TAIL_HOLE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, partly_unmapped_d2s)
{
	D2S, .range = R_TAIL_HOLE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, partly_prot_none)
{
	S2D, .range = R_TAIL_PROT_NONE, .err = EINVAL,
};

FIXTURE_VARIANT_ADD(bad_input, status_readonly)
{
	S2D, .status = S_READONLY, .err = EFAULT,
};

FIXTURE_VARIANT_ADD(bad_input, status_readonly_d2s)
{
	D2S, .status = S_READONLY, .err = EFAULT,
};

FIXTURE_VARIANT_ADD(bad_input, status_straddles_readonly)
{
	S2D, .status = S_STRADDLE, .err = EFAULT,
};

FIXTURE_VARIANT_ADD(bad_input, status_bad_pointer)
{
	S2D, .status = S_LOW, .err = EFAULT,
};

FIXTURE_VARIANT_ADD(bad_input, command_null)
{
	S2D, .arg_null = true, .err = EFAULT,
};

FIXTURE_SETUP(bad_input)
{
	char *tail;

	self->fd = open(devices[0], O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->buf = anon(NPAGES + 1);
	ASSERT_NE(NULL, self->buf);
	fill(self->buf, 0, NPAGES, 12);
	legacy_to_dev(_metadata, self->fd, self->buf, NPAGES / 2, NPAGES / 2);
	tail = self->buf + NPAGES * ps;
	switch (variant->range) {
	case R_TAIL_HOLE:
		ASSERT_EQ(0, munmap(tail, ps));
		break;
	case R_TAIL_PROT_NONE:
		ASSERT_EQ(0, mprotect(tail, ps, PROT_NONE));
		break;
	}
	self->hole = mmap(NULL, NPAGES * ps, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->hole);
	ASSERT_EQ(0, munmap(self->hole, NPAGES * ps));
	self->st = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->st);
	ASSERT_EQ(0, mprotect(self->st + ps, ps, PROT_READ));
	expect_where(_metadata, "setup", self->fd, self->buf, 0, NPAGES / 2,
		     ON_SYSTEM);
	expect_where(_metadata, "setup", self->fd, self->buf, NPAGES / 2,
		     NPAGES / 2, ON_PRIVATE);
	snapshot(_metadata, self->fd, self->buf, NPAGES, self->before);
}

FIXTURE_TEARDOWN(bad_input)
{
	munmap(self->buf, (NPAGES + 1) * ps);
	munmap(self->st, 2 * ps);
	close(self->fd);
}

TEST_F(bad_input, rejected)
{
	struct hmm_rs_migrate m = {
		.addr = (uintptr_t)self->buf,
		.npages = NPAGES,
		.status = (uintptr_t)self->st,
		.select = variant->select,
		.dst = variant->dst,
		.flags = variant->flags,
		.src_dev = variant->src_dev,
	};
	unsigned char after[NPAGES];
	int ret, i, bad = 0;

	switch (variant->range) {
	case R_HOLE:
		m.addr = (uintptr_t)self->hole;
		break;
	case R_TAIL_HOLE:
	case R_TAIL_PROT_NONE:
		m.npages = NPAGES + 1;
		break;
	case R_TOP:
		m.addr = -(uint64_t)(NPAGES * ps);
		break;
	}
	m.addr += variant->addr_off;
	switch (variant->npages) {
	case NP_ZERO:
		m.npages = 0;
		break;
	case NP_HUGE:
		m.npages = UINT64_MAX / ps;
		break;
	case NP_WRAP:
		/* In bytes 2^64 + NPAGES pages: NPAGES pages in 64 bits. */
		m.npages = UINT64_MAX / ps + 1 + NPAGES;
		break;
	}
	switch (variant->status) {
	case S_NULL:
		m.status = 0;
		break;
	case S_READONLY:
		m.status = (uintptr_t)(self->st + ps);
		break;
	case S_STRADDLE:
		m.status = (uintptr_t)(self->st + ps - NPAGES / 2);
		break;
	case S_LOW:
		m.status = 16;
		break;
	}

	ret = ioctl(self->fd, HMM_RS_MIGRATE, variant->arg_null ? NULL : &m) ?
	      -errno : 0;
	if (ret != -variant->err)
		TH_LOG("expected %s, got %s", errname(variant->err),
		       ret ? errname(-ret) : "0 (success)");
	ASSERT_EQ(-variant->err, ret);

	/* Nothing moved. */
	snapshot(_metadata, self->fd, self->buf, NPAGES, after);
	for (i = 0; i < NPAGES; i++) {
		if (after[i] == self->before[i])
			continue;
		bad++;
		TH_LOG("page %d: snapshot byte 0x%02x before the call, 0x%02x after",
		       i, self->before[i], after[i]);
	}
	ASSERT_EQ(0, bad);
	expect_data(_metadata, self->buf, 0, NPAGES, 12);
}

/*
 * The command itself in a read-only page: the kernel reads it, but cannot
 * write the counts back, which it finds out before anything moves:
 * EFAULT, and the pages are where they were.
 */
TEST(command_read_only)
{
	struct hmm_rs_migrate *m;
	int fd = open(devices[0], O_RDWR);
	char *buf = anon(NPAGES);

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	fill(buf, 0, NPAGES, 12);
	m = mmap(NULL, ps, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, m);
	*m = (struct hmm_rs_migrate){
		.addr = (uintptr_t)buf,
		.npages = NPAGES,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
	};
	ASSERT_EQ(0, mprotect(m, ps, PROT_READ));
	ASSERT_EQ(-1, ioctl(fd, HMM_RS_MIGRATE, m));
	ASSERT_EQ(EFAULT, errno);
	expect_where(_metadata, "after EFAULT", fd, buf, 0, NPAGES, ON_SYSTEM);
	expect_data(_metadata, buf, 0, NPAGES, 12);
	munmap(m, ps);
	munmap(buf, NPAGES * ps);
	close(fd);
}

TEST_HARNESS_MAIN
