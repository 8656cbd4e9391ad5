// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs memory pressure kselftests: migrations and faults with guest
 * memory nearly exhausted, and with device memory exhausted. Every call
 * either succeeds or fails with an errno the case allows (ENOMEM, or
 * ENOENT for a partial migration); no byte of user memory is lost or
 * stale; the device memory is usable again afterwards. Kernel splats fail
 * the suite in the runner (scripts/tap-summary.py). Runs with the module
 * loaded; see scripts/plans/check.
 *
 * pressure.*: guest memory nearly exhausted (6 GiB guest, no swap). The
 *   test populates what it needs, then takes most of the free memory away
 *   by raising /proc/sys/vm/nr_hugepages until MemAvailable is about
 *   HMM_RS_PRESSURE_AVAIL_MB (32; restored afterwards, by the harness's
 *   parent too if the test dies), staying above the OOM killer's line.
 *   The region: HMM_RS_PRESSURE_MB (16) of small pages (small) or THPs
 *   (thp), on /dev/hmm_dmirror0, device-private memory the driver backs
 *   with system pages it allocates per migration.
 *   rounds: for HMM_RS_PRESSURE_SECS (5, at least one round): a migration
 *   of it all to the device, SNAPSHOT, a device READ and WRITE, CPU faults
 *   back and CPU writes, EXCLUSIVE of a few small pages, a migration back,
 *   a CPU check of every byte. Figures: the pages each migration moved
 *   (and in device THPs: whether the THP paths fell back to small pages),
 *   each call's outcomes, and MemAvailable (plus the per-CPU free lists):
 *   how far it drops while the region is on the device, and how much less
 *   there is after the last round than before the first; both at most
 *   HMM_RS_LEAK_MB (16).
 *   release: HMM_DMIRROR_RELEASE of the region on the device (as device
 *   THPs in thp) while memory is short: it evicts everything or fails with
 *   EBUSY, never loses a byte; with memory back a second RELEASE evicts
 *   everything and a fresh migration moves whole.
 *
 * coherent.*: device memory exhausted. /dev/hmm_dmirror2 and 3 have one
 *   chunk of device-coherent memory each (HMM_RS_COHERENT_MB, 256); each
 *   device gets HMM_RS_OVER_MB (16) more than that to hold, in migrations
 *   of HMM_RS_STEP_MB (24: one of them is cut short). A migration returns
 *   0 only if all its pages moved (SNAPSHOT shows each on the device, the
 *   data returned is right: every 8th page is checked), else ENOMEM or
 *   ENOENT; when all are done,
 *   exactly the device's pages are in use, every byte reads right from the
 *   CPU, and half of them through the device after the CPU rewrote some
 *   pages and zapped and rewrote others (no stale device mapping). Then the pages
 *   are freed, by a migration back or an unmap, and a fresh migration
 *   moves whole. Each file is a process of its own. one_device; two
 *   processes filling one device (one migrates back, one unmaps);
 *   two_devices, both at once; thp: a THP-backed region (device-coherent
 *   memory has no THPs: it moves page by page). The coherent devices exist
 *   only with the spm_addr_dev* module arguments: the cases skip without
 *   them unless HMM_RS_COHERENT=1 says they must be there.
 *
 * HMM_RS_SEED sets the data patterns' seed (printed); HMM_RS_VERBOSE=1
 * prints the time of each step. The C test_hmm runs these only as a
 * reference: it WARNs when its device-coherent memory runs out and Oopses
 * on the THP case, which therefore comes last.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"

#define MIB (1UL << 20)
#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

/* ksft_print_msg(), flushed: a crash or a stuck child must not eat it. */
#define note(...) do {				\
	ksft_print_msg(__VA_ARGS__);		\
	fflush(stdout);				\
} while (0)

static long page_size;

/* A non-negative number from the environment, @def if unset or malformed. */
static unsigned long env_ulong(const char *name, unsigned long def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return def;
	v = strtoul(s, &end, 0);
	return *end ? def : v;
}

static int verbose = -1;
static long meminfo_kb(const char *key);

/* With HMM_RS_VERBOSE=1: each step with the time it took. */
static void step_done(const char *what)
{
	static double last;
	double t = now();

	if (verbose < 0)
		verbose = !!getenv("HMM_RS_VERBOSE");
	if (verbose && last)
		note("  step %-28s %.3f s, MemFree %ld KiB\n", what, t - last,
		     meminfo_kb("MemFree"));
	last = t;
}

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return err ? (s ? s : "E?") : "0";
}

/* ---- memory figures ------------------------------------------------------ */

/* A "Key: N kB" line of /proc/meminfo, in KiB; -1 if missing. */
static long meminfo_kb(const char *key)
{
	char line[128];
	size_t klen = strlen(key);
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			kb = strtol(line + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/*
 * MemAvailable plus the pages on the per-CPU free lists (in no count of
 * /proc/meminfo, and under pressure they grow by megabytes), in KiB: what
 * a leak shows in.
 */
static long avail_kb(void)
{
	long kb = meminfo_kb("MemAvailable"), pcp = 0, n;
	char line[256];
	FILE *f = fopen("/proc/zoneinfo", "r");

	if (!f)
		return kb;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, " count: %ld", &n) == 1)
			pcp += n;
	fclose(f);
	return kb + pcp * (page_size / 1024);
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -errno;
	ret = fprintf(f, "%ld\n", v) < 0 ? -EIO : 0;
	if (fclose(f) && !ret)
		ret = -errno;
	return ret;
}

/* ---- data patterns --------------------------------------------------------- */

/*
 * Each page holds words v + j * GOLDEN (j the word), v a hash of the run's
 * seed, the page's region and index, and its version: a page from another
 * region, another place or an older version never matches.
 */
#define GOLDEN 0x9e3779b97f4a7c15ULL

static uint64_t run_seed;

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* A region of user memory and the version of each of its pages. */
struct area {
	char *p;
	unsigned long npages;
	size_t len;
	size_t map_len;
	char *map;
	uint8_t *ver;
	unsigned int id;
};

static uint64_t page_value(const struct area *a, unsigned long i)
{
	return mix64(run_seed ^ ((uint64_t)a->id << 48) ^ ((uint64_t)i << 8) ^
		     a->ver[i]);
}

static void fill_page(uint64_t *w, uint64_t v)
{
	unsigned long j, n = page_size / sizeof(*w);

	for (j = 0; j < n; j++)
		w[j] = v + j * GOLDEN;
}

/* The first wrong word of page @w that should hold @v, or -1. */
static long check_page(const uint64_t *w, uint64_t v)
{
	unsigned long j, n = page_size / sizeof(*w);

	for (j = 0; j < n; j++)
		if (w[j] != v + j * GOLDEN)
			return j;
	return -1;
}

/* Writes pages [from, from + n) of @a from the CPU, new versions. */
static void area_write(struct area *a, unsigned long from, unsigned long n)
{
	unsigned long i;

	for (i = from; i < from + n && i < a->npages; i++) {
		a->ver[i]++;
		fill_page((uint64_t *)(a->p + i * page_size), page_value(a, i));
	}
}

/*
 * Checks pages [from, from + n) of @a in @buf (the area itself if NULL;
 * @buf[0] is page @from). Returns the number of wrong pages and reports
 * the first few as @what.
 */
static unsigned long area_check(const struct area *a, unsigned long from,
				unsigned long n, const char *buf,
				const char *what)
{
	unsigned long i, bad = 0;

	for (i = from; i < from + n && i < a->npages; i++) {
		const char *pg = buf ? buf + (i - from) * page_size :
				       a->p + i * page_size;
		uint64_t v = page_value(a, i);
		long w = check_page((const uint64_t *)pg, v);

		if (w < 0)
			continue;
		if (bad++ < 3)
			note("%s: region %u page %lu word %ld: %#llx, expected %#llx (version %u)\n",
			     what, a->id, i, w,
			     (unsigned long long)((const uint64_t *)pg)[w],
			     (unsigned long long)(v + w * GOLDEN), a->ver[i]);
	}
	if (bad > 3)
		note("%s: region %u: %lu wrong page(s) in all\n", what, a->id,
		     bad);
	return bad;
}

/*
 * As area_check() on every @stride-th page of [from, from + n) and the
 * last: for the copies a migration returns, whose pages the CPU checks
 * anyway.
 */
static unsigned long area_check_some(const struct area *a, unsigned long from,
				     unsigned long n, const char *buf,
				     const char *what, unsigned long stride)
{
	unsigned long i, bad = 0;

	for (i = 0; i < n; i += stride)
		bad += area_check(a, from + i, 1, buf + i * page_size, what);
	if (n && (n - 1) % stride)
		bad += area_check(a, from + n - 1, 1,
				  buf + (n - 1) * page_size, what);
	return bad;
}

/*
 * A populated region of @npages; THP-backed and 2 MiB aligned if @thp,
 * else small pages only.
 */
static int area_alloc(struct area *a, unsigned long npages, bool thp,
		      unsigned int id)
{
	size_t align = thp ? 2 * MIB : 0;

	memset(a, 0, sizeof(*a));
	a->npages = npages;
	a->len = npages * page_size;
	a->map_len = a->len + align;
	a->id = id;
	a->map = mmap(NULL, a->map_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a->map == MAP_FAILED)
		return -errno;
	a->p = thp ? (char *)(((uintptr_t)a->map + align - 1) & ~(align - 1)) :
		     a->map;
	madvise(a->p, a->len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	a->ver = calloc(npages, 1);
	if (!a->ver)
		return -ENOMEM;
	area_write(a, 0, npages);
	return 0;
}

static void area_free(struct area *a)
{
	if (a->map && a->map != MAP_FAILED)
		munmap(a->map, a->map_len);
	free(a->ver);
	memset(a, 0, sizeof(*a));
}

/* Pages of [from, from + n) of @a */
static uint64_t area_addr(const struct area *a, unsigned long from)
{
	return (uintptr_t)(a->p + from * page_size);
}

/*
 * A populated buffer of small pages for what the device returns. Not zero:
 * under memory pressure the kernel splits THPs full of zeroes and frees
 * their zero pages (the THP shrinker), and each refault would be a trip
 * through reclaim.
 */
static char *buffer(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 0xa5, len);
	return p;
}

/* ---- device calls ---------------------------------------------------------- */

/* What SNAPSHOT says of a range: pages on this device, as THPs, elsewhere. */
struct snap {
	unsigned long dev;	/* on this device (PRIVATE/COHERENT_LOCAL) */
	unsigned long dev_pmd;	/* of those, mapped by a PMD (a device THP) */
	unsigned long other;	/* anything else, including unmapped */
	int err;		/* the ioctl's -errno */
};

static struct snap snapshot(int fd, const struct area *a, unsigned long from,
			    unsigned long n, uint8_t *buf, uint8_t devtype)
{
	struct snap s = { 0 };
	unsigned long i;

	s.err = hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, area_addr(a, from), buf,
			   n, NULL);
	if (s.err)
		return s;
	for (i = 0; i < n; i++) {
		if ((buf[i] & 0xf0) == devtype && buf[i] != HMM_DMIRROR_PROT_ERROR) {
			s.dev++;
			if (buf[i] & HMM_DMIRROR_PROT_PMD)
				s.dev_pmd++;
		} else {
			s.other++;
		}
	}
	return s;
}

/* Whether -@err is one of the @n errnos that follow (0 always is). */
static bool allowed(int err, int n, ...)
{
	va_list ap;
	bool ok = !err;

	va_start(ap, n);
	while (n--)
		if (-err == va_arg(ap, int))
			ok = true;
	va_end(ap);
	return ok;
}

/* Tallies of one kind of call: how often each outcome came. */
struct tally {
	const char *name;
	unsigned long calls, ok, enomem, other_allowed, bad;
	int last_bad;
};

static void count(struct tally *t, int err, bool ok)
{
	t->calls++;
	if (!err)
		t->ok++;
	else if (err == -ENOMEM)
		t->enomem++;
	else if (ok)
		t->other_allowed++;
	if (!ok) {
		t->bad++;
		t->last_bad = -err;
	}
}

static void tally_print(const struct tally *t)
{
	if (!t->calls)
		return;
	note("  %-15s %4lu call(s): %lu ok, %lu ENOMEM, %lu other allowed errno, %lu unexpected%s%s\n",
	     t->name, t->calls, t->ok, t->enomem, t->other_allowed, t->bad,
	     t->bad ? " (last " : "", t->bad ? errname(t->last_bad) : "");
	if (t->bad)
		note("  ^ unexpected errno from %s\n", t->name);
}

/* ---- pressure: guest memory nearly exhausted ------------------------------- */

/*
 * Takes free memory away with huge pages until MemAvailable is at most
 * @target_kb (or the kernel gives no more). Returns the huge pages added.
 */
static long squeeze(long target_kb, long old_nr)
{
	long hp_kb = meminfo_kb("Hugepagesize");
	long cur = old_nr;
	int i;

	if (hp_kb <= 0)
		return 0;
	for (i = 0; i < 16; i++) {
		long avail = meminfo_kb("MemAvailable");
		long want, got;

		if (avail <= target_kb + hp_kb)
			break;
		want = cur + (avail - target_kb) / hp_kb;
		if (write_long(NR_HUGEPAGES, want))
			break;
		got = read_long(NR_HUGEPAGES);
		if (got <= cur)
			break;
		cur = got;
	}
	return cur - old_nr;
}

FIXTURE(pressure) {
	/* nr_hugepages before the squeeze; -1: not changed. */
	long old_nr;
};

FIXTURE_VARIANT(pressure) {
	bool thp;
};

FIXTURE_VARIANT_ADD(pressure, small) { .thp = false };
FIXTURE_VARIANT_ADD(pressure, thp) { .thp = true };

FIXTURE_SETUP(pressure)
{
	page_size = sysconf(_SC_PAGESIZE);
	self->old_nr = -1;
	if (!run_seed) {
		run_seed = env_ulong("HMM_RS_SEED", time(NULL));
		note("seed %llu; replay: HMM_RS_SEED=%llu with the same sizes\n",
		     (unsigned long long)run_seed,
		     (unsigned long long)run_seed);
	}
}

/* In the parent: the huge pages go back even if the test died. */
FIXTURE_TEARDOWN_PARENT(pressure)
{
	if (self->old_nr >= 0 && write_long(NR_HUGEPAGES, self->old_nr))
		note("could not restore nr_hugepages to %ld\n", self->old_nr);
	self->old_nr = -1;
}

/*
 * Squeezes memory; @old_nr (the fixture's, which the parent restores)
 * gets nr_hugepages from before. Returns the huge pages taken.
 */
static long pressure_on(long *old_nr)
{
	long target = env_ulong("HMM_RS_PRESSURE_AVAIL_MB", 32) * 1024;
	long before = meminfo_kb("MemAvailable"), taken;

	*old_nr = read_long(NR_HUGEPAGES);
	if (*old_nr < 0)
		return -1;
	taken = squeeze(target, *old_nr);
	note("squeeze: %ld huge page(s) taken; MemAvailable %ld -> %ld MiB (target %ld), MemFree %ld MiB\n",
	     taken, before >> 10, meminfo_kb("MemAvailable") >> 10,
	     target >> 10, meminfo_kb("MemFree") >> 10);
	return taken;
}

static void pressure_off(long *old_nr)
{
	if (*old_nr >= 0)
		write_long(NR_HUGEPAGES, *old_nr);
	*old_nr = -1;
}

/* The calls of a pressure round, in order. */
enum { T_TO_DEV, T_SNAP, T_READ, T_WRITE, T_EXCL, T_CHECK_EXCL, T_TO_SYS,
	T_NR };

TEST_F_TIMEOUT(pressure, rounds, 120)
{
	unsigned long mb = env_ulong("HMM_RS_PRESSURE_MB", 16);
	double budget = env_ulong("HMM_RS_PRESSURE_SECS", 5);
	long leak_kb = env_ulong("HMM_RS_LEAK_MB", 16) * 1024;
	unsigned long max_rounds = env_ulong("HMM_RS_PRESSURE_ROUNDS", 100);
	struct tally t[T_NR] = {
		[T_TO_DEV] = { "MIGRATE_TO_DEV" }, [T_SNAP] = { "SNAPSHOT" },
		[T_READ] = { "READ" }, [T_WRITE] = { "WRITE" },
		[T_EXCL] = { "EXCLUSIVE" },
		[T_CHECK_EXCL] = { "CHECK_EXCLUSIVE" },
		[T_TO_SYS] = { "MIGRATE_TO_SYS" },
	};
	unsigned long n, q, rounds = 0, bad = 0, dev_min = -1UL, dev_max = 0;
	unsigned long pmd_max = 0, back = 0, x_n = 16;
	long avail0 = -1, avail_low = -1, avail_first = -1, avail_last = -1;
	long growth_max = 0;
	struct hmm_dmirror_cmd c;
	struct area a, x;
	uint8_t *snapbuf;
	char *out;
	double start;
	int fd, err, i;

	n = mb * MIB / page_size;
	q = n / 4;
	ASSERT_LE(4, n);
	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, area_alloc(&a, n, variant->thp, 1));
	ASSERT_EQ(0, area_alloc(&x, x_n, false, 2));
	out = buffer(a.len);
	ASSERT_NE(NULL, out);
	snapbuf = (uint8_t *)buffer(n);
	ASSERT_NE(NULL, snapbuf);

	/* The device has a chunk with free pages before memory is short. */
	err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, area_addr(&x, 0),
			 out, 1, NULL);
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS,
				area_addr(&x, 0), out, 1, NULL));

	pressure_on(&self->old_nr);
	avail0 = avail_kb();
	avail_low = avail0;
	note("%s region of %lu MiB (%lu pages); rounds of at most %.0f s\n",
	     variant->thp ? "THP" : "small-page", mb, n, budget);

	start = now();
	step_done("start");
	while (rounds < max_rounds && (!rounds || now() - start < budget)) {
		long before = avail_kb(), during, after;
		struct snap s;

		/* All of it to the device: what moved must be right. */
		err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				 area_addr(&a, 0), out, n, NULL);
		count(&t[T_TO_DEV], err, allowed(err, 2, ENOMEM, ENOENT));
		step_done("MIGRATE_TO_DEV");
		if (!err)
			bad += area_check(&a, 0, n, out, "MIGRATE_TO_DEV data");
		step_done("check");

		s = snapshot(fd, &a, 0, n, snapbuf,
			     HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL);
		count(&t[T_SNAP], s.err, allowed(s.err, 1, ENOMEM));
		if (!s.err) {
			if (!err && s.dev != n) {
				note("round %lu: MIGRATE_TO_DEV returned 0, but %lu of %lu pages are on the device\n",
				     rounds, s.dev, n);
				bad++;
			}
			dev_min = s.dev < dev_min ? s.dev : dev_min;
			dev_max = s.dev > dev_max ? s.dev : dev_max;
			pmd_max = s.dev_pmd > pmd_max ? s.dev_pmd : pmd_max;
		}
		during = avail_kb();
		if (before - during > growth_max)
			growth_max = before - during;
		if (during < avail_low)
			avail_low = during;

		/* The device reads it all, through its own page table. */
		err = hmm_rs_cmd(fd, HMM_DMIRROR_READ, area_addr(&a, 0), out,
				 n, NULL);
		count(&t[T_READ], err, allowed(err, 2, ENOMEM, EBUSY));
		step_done("READ");
		if (!err)
			bad += area_check(&a, 0, n, out, "READ data");
		step_done("check");

		/* The device writes the first quarter. */
		for (i = 0; i < (int)q; i++) {
			a.ver[i]++;
			fill_page((uint64_t *)(out + i * page_size),
				  page_value(&a, i));
		}
		err = hmm_rs_cmd(fd, HMM_DMIRROR_WRITE, area_addr(&a, 0), out,
				 q, NULL);
		count(&t[T_WRITE], err, allowed(err, 2, ENOMEM, EBUSY));
		if (err) {
			/* Partly written: make it known again, from the CPU. */
			area_write(&a, 0, q);
		}

		/* The CPU reads the first half (faults back), writes the third quarter. */
		step_done("WRITE");
		bad += area_check(&a, 0, 2 * q, NULL, "CPU read");
		step_done("CPU read half");
		area_write(&a, 2 * q, q);
		step_done("CPU write quarter");

		/* A few small pages exclusive to the device, then the CPU's. */
		err = hmm_rs_cmd(fd, HMM_DMIRROR_EXCLUSIVE, area_addr(&x, 0),
				 out, x_n, &c);
		count(&t[T_EXCL], err, allowed(err, 2, ENOMEM, EBUSY));
		if (!err)
			bad += area_check(&x, 0, x_n, out, "EXCLUSIVE data");
		area_write(&x, 0, x_n);
		err = hmm_rs_cmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE,
				 area_addr(&x, 0), out, x_n, NULL);
		count(&t[T_CHECK_EXCL], err, !err);

		/* The rest back to system memory, and every byte checked. */
		err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS,
				 area_addr(&a, 0), out, n, &c);
		count(&t[T_TO_SYS], err, allowed(err, 1, ENOMEM));
		if (!err)
			back += c.cpages;
		step_done("MIGRATE_TO_SYS");
		bad += area_check(&a, 0, n, NULL, "CPU check");
		bad += area_check(&x, 0, x_n, NULL, "CPU check");
		step_done("CPU check");

		after = avail_kb();
		if (avail_first < 0)
			avail_first = after;
		avail_last = after;
		if (after < avail_low)
			avail_low = after;
		rounds++;
	}
	pressure_off(&self->old_nr);

	note("%lu round(s) in %.1f s; on the device after each MIGRATE_TO_DEV: %lu to %lu of %lu pages, at most %lu in device THPs; %lu page(s) migrated back\n",
	     rounds, now() - start, dev_min == -1UL ? 0 : dev_min, dev_max, n,
	     pmd_max, back);
	for (i = 0; i < T_NR; i++)
		tally_print(&t[i]);
	note("MemAvailable (+ per-CPU free lists): %ld MiB squeezed, lowest %ld MiB; largest drop while on the device %ld KiB; after round 1 %ld MiB, after the last %ld MiB (%ld KiB less than before round 1, at most %ld allowed); now %ld MiB\n",
	     avail0 >> 10, avail_low >> 10, growth_max, avail_first >> 10,
	     avail_last >> 10, avail0 - avail_last, leak_kb,
	     avail_kb() >> 10);

	EXPECT_EQ(0, bad);
	for (i = 0; i < T_NR; i++)
		EXPECT_EQ(0, t[i].bad);
	EXPECT_LE(avail0 - avail_last, leak_kb);
	EXPECT_LE(growth_max, leak_kb);
	/* Under pressure, the first migration must move something. */
	EXPECT_LT(0, dev_max);
	munmap(snapbuf, n);
	munmap(out, a.len);
	area_free(&x);
	area_free(&a);
	close(fd);
}

/*
 * HMM_DMIRROR_RELEASE while memory is short: evicting a device THP needs a
 * free system THP. The call evicts everything or fails with EBUSY; no byte
 * is lost; once memory is back, a second RELEASE evicts the rest and the
 * device takes a fresh migration.
 */
TEST_F_TIMEOUT(pressure, release, 60)
{
	unsigned long mb = env_ulong("HMM_RS_PRESSURE_MB", 16);
	unsigned long n = mb * MIB / page_size;
	struct snap s0, s1, s2;
	uint8_t *snapbuf;
	struct area a;
	char *out;
	int fd, err1, err2, err3;
	unsigned long bad = 0;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, area_alloc(&a, n, variant->thp, 3));
	out = buffer(a.len);
	ASSERT_NE(NULL, out);
	snapbuf = (uint8_t *)buffer(n);
	ASSERT_NE(NULL, snapbuf);

	/* On the device (device THPs where the region has THPs). */
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				area_addr(&a, 0), out, n, NULL));
	s0 = snapshot(fd, &a, 0, n, snapbuf, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL);

	pressure_on(&self->old_nr);
	err1 = hmm_rs_cmd(fd, HMM_DMIRROR_RELEASE, area_addr(&a, 0), out, 1,
			  NULL);
	s1 = snapshot(fd, &a, 0, n, snapbuf, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL);
	bad += area_check(&a, 0, n, NULL, "CPU check under pressure");
	pressure_off(&self->old_nr);

	/* Whatever the first left on the device, the second evicts. */
	ASSERT_EQ(0, hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				area_addr(&a, 0), out, n / 2, NULL));
	err2 = hmm_rs_cmd(fd, HMM_DMIRROR_RELEASE, area_addr(&a, 0), out, 1,
			  NULL);
	s2 = snapshot(fd, &a, 0, n, snapbuf, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL);
	bad += area_check(&a, 0, n, NULL, "CPU check after the second RELEASE");

	/* The device works: a fresh migration, whole and right. */
	err3 = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, area_addr(&a, 0),
			  out, n, NULL);
	if (!err3)
		bad += area_check(&a, 0, n, out, "MIGRATE_TO_DEV data");
	bad += area_check(&a, 0, n, NULL, "CPU check at the end");

	note("%s region of %lu pages: %lu on the device (%lu in THPs); RELEASE under pressure: %s, %lu left on the device; after it, with memory back: %s, %lu left; a fresh migration: %s\n",
	     variant->thp ? "THP" : "small-page", n, s0.dev, s0.dev_pmd,
	     errname(-err1), s1.dev, errname(-err2), s2.dev, errname(-err3));
	EXPECT_EQ(0, s0.err);
	EXPECT_EQ(0, s1.err);
	EXPECT_EQ(0, s2.err);
	EXPECT_TRUE(allowed(err1, 1, EBUSY));
	/* EBUSY only with pages left, 0 only without. */
	EXPECT_EQ(!err1, !s1.dev);
	EXPECT_EQ(0, err2);
	EXPECT_EQ(0, s2.dev);
	EXPECT_EQ(0, err3);
	EXPECT_EQ(0, bad);
	munmap(snapbuf, n);
	munmap(out, a.len);
	area_free(&a);
	close(fd);
}

/* ---- coherent: device memory exhausted ------------------------------------- */

FIXTURE(coherent) {
	int dummy;
};

FIXTURE_VARIANT(coherent) {
	/* Devices (dmirror2, then 3), and files per device, each a thread. */
	int ndev;
	int nfiles;
	bool thp;
	/*
	 * Files that free their device pages by unmapping instead of
	 * migrating back: the last @unmap of them.
	 */
	int unmap;
};

FIXTURE_VARIANT_ADD(coherent, one_device) {
	.ndev = 1, .nfiles = 1,
};

/* The first file migrates back, the second unmaps. */
FIXTURE_VARIANT_ADD(coherent, two_files_one_device) {
	.ndev = 1, .nfiles = 2, .unmap = 1,
};

FIXTURE_VARIANT_ADD(coherent, two_devices) {
	.ndev = 2, .nfiles = 1,
};

/* Last: the C test_hmm Oopses on it. */
FIXTURE_VARIANT_ADD(coherent, thp) {
	.ndev = 1, .nfiles = 1, .thp = true, .unmap = 1,
};

FIXTURE_SETUP(coherent)
{
	const char *must = getenv("HMM_RS_COHERENT");
	int fd;

	page_size = sysconf(_SC_PAGESIZE);
	if (!run_seed) {
		run_seed = env_ulong("HMM_RS_SEED", time(NULL));
		note("seed %llu; replay: HMM_RS_SEED=%llu with the same sizes\n",
		     (unsigned long long)run_seed,
		     (unsigned long long)run_seed);
	}
	fd = open("/dev/hmm_dmirror2", O_RDWR);
	if (fd < 0 && !(must && !strcmp(must, "1")))
		SKIP(return, "no device-coherent memory (/dev/hmm_dmirror2: %s)",
		     strerror(errno));
	ASSERT_LE(0, fd);
	close(fd);
}

FIXTURE_TEARDOWN(coherent)
{
}

/*
 * One file filling one device, in a process of its own (its own mm: two
 * threads of one mm would spend their time on TLB shootdowns). What it
 * found, for the parent to check, lives in shared memory.
 */
struct filler {
	/* Set by the child. */
	struct tally to_dev;
	unsigned long on_dev;	/* pages on the device when all are full */
	unsigned long ok_but_missing;	/* pages of 0-returning steps not moved */
	unsigned long partial_steps;	/* steps that moved some, not all */
	unsigned long bad;	/* wrong pages, wherever seen */
	unsigned long back;	/* pages MIGRATE_TO_SYS moved */
	unsigned long fresh_dev;	/* pages of the fresh region moved */
	int snap_err, read_err, to_sys_err, fresh_err, setup_err;
	int left_on_dev;	/* pages on the device after MIGRATE_TO_SYS */
	bool done;
};

/* The state shared by the children of one case. */
struct fill_shared {
	pthread_barrier_t full, freed;
	struct filler f[2];
};

struct fill_args {
	int dev;
	unsigned long npages, step;
	bool thp, unmap;
	unsigned int id;
};

static int open_dev(int dev)
{
	char path[32];

	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", dev);
	return open(path, O_RDWR);
}

/* @n pages from @from, at most @step and not past @total. */
static unsigned long step_len(unsigned long from, unsigned long step,
			      unsigned long total)
{
	return total - from < step ? total - from : step;
}

/*
 * Device READ of the first @npages of @a, @step pages at a time: must
 * succeed and see what the CPU sees. Returns the wrong pages; the first
 * error in @err.
 */
static unsigned long device_read(int fd, const struct area *a,
				 unsigned long npages, unsigned long step,
				 char *out, int *err)
{
	unsigned long from, bad = 0;

	for (from = 0; from < npages; from += step) {
		unsigned long n = step_len(from, step, npages);
		int ret = hmm_rs_cmd(fd, HMM_DMIRROR_READ, area_addr(a, from),
				     out, n, NULL);

		if (ret) {
			if (!*err) {
				note("READ of pages %lu..%lu: %s\n", from,
				     from + n, errname(-ret));
				*err = ret;
			}
			continue;
		}
		bad += area_check(a, from, n, out, "READ data");
	}
	return bad;
}

/*
 * The child's part: fill the device in steps; when every child is done
 * (@sh->full), check every byte from the CPU and through the device,
 * rewrite from the CPU (and zap and rewrite a quarter): the device must
 * see it; free the device pages (migrate back or unmap); when every child
 * is done (@sh->freed), migrate a fresh region, which must move whole.
 */
static void fill_child(struct fill_shared *sh, struct filler *f,
		       const struct fill_args *arg)
{
	unsigned long from, per = arg->npages, step = arg->step;
	struct hmm_dmirror_cmd c;
	uint8_t *snapbuf;
	struct area a, b;
	struct snap s;
	char *out;
	int fd, err;

	fd = open_dev(arg->dev);
	snapbuf = (uint8_t *)buffer(per);
	out = buffer(step * page_size);
	if (fd < 0 || !snapbuf || !out ||
	    area_alloc(&a, per, arg->thp, arg->id)) {
		f->setup_err = errno ? errno : ENOMEM;
		pthread_barrier_wait(&sh->full);
		pthread_barrier_wait(&sh->freed);
		return;
	}
	f->to_dev.name = "MIGRATE_TO_DEV";
	for (from = 0; from < per; from += step) {
		unsigned long n = step_len(from, step, per);

		err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				 area_addr(&a, from), out, n, NULL);
		count(&f->to_dev, err, allowed(err, 2, ENOMEM, ENOENT));
		s = snapshot(fd, &a, from, n, snapbuf,
			     HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL);
		if (s.err) {
			f->snap_err = s.err;
			continue;
		}
		if (!err) {
			f->ok_but_missing += n - s.dev;
			f->bad += area_check_some(&a, from, n, out,
						  "MIGRATE_TO_DEV data", 8);
		} else if (s.dev && s.dev < n) {
			f->partial_steps++;
		}
	}
	step_done("fill");
	s = snapshot(fd, &a, 0, per, snapbuf,
		     HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL);
	f->snap_err = f->snap_err ? f->snap_err : s.err;
	f->on_dev = s.dev;
	pthread_barrier_wait(&sh->full);

	/* Every byte, from the CPU (device-coherent: no fault). */
	f->bad += area_check(&a, 0, per, NULL, "CPU check when full");
	step_done("check");

	/*
	 * The device sees the same, and nothing stale: the CPU rewrites the
	 * second quarter (on the device), zaps the first and writes it anew
	 * (other pages: a device mapping of the freed ones would be stale);
	 * the device reads both quarters.
	 */
	area_write(&a, per / 4, per / 4);
	madvise(a.p, per / 4 * page_size, MADV_DONTNEED);
	area_write(&a, 0, per / 4);
	f->bad += device_read(fd, &a, per / 2, step, out, &f->read_err);
	step_done("rewrite and READ");

	/* Free the device memory: migrate back, or unmap. */
	if (!arg->unmap) {
		f->to_sys_err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS,
					   area_addr(&a, 0), NULL, per, &c);
		f->back = c.cpages;
		s = snapshot(fd, &a, 0, per, snapbuf,
			     HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL);
		f->left_on_dev = s.err ? -1 : (int)s.dev;
		f->bad += area_check(&a, 0, per, NULL,
				     "CPU check after MIGRATE_TO_SYS");
	}
	area_free(&a);
	step_done("free");
	pthread_barrier_wait(&sh->freed);

	/* The device memory is usable again: a fresh region moves whole. */
	if (area_alloc(&b, step, arg->thp, arg->id + 10)) {
		f->fresh_err = -ENOMEM;
	} else {
		f->fresh_err = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
					  area_addr(&b, 0), out, step, NULL);
		s = snapshot(fd, &b, 0, step, snapbuf,
			     HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL);
		f->fresh_dev = s.err ? 0 : s.dev;
		if (!f->fresh_err)
			f->bad += area_check(&b, 0, step, out,
					     "fresh MIGRATE_TO_DEV data");
		area_write(&b, 0, step);
		f->bad += device_read(fd, &b, step, step, out, &f->read_err);
		area_free(&b);
	}
	step_done("fresh migration");
	close(fd);
	f->done = true;
}

TEST_F_TIMEOUT(coherent, exhaust, 180)
{
	unsigned long cap = env_ulong("HMM_RS_COHERENT_MB", 256) * MIB / page_size;
	unsigned long over = env_ulong("HMM_RS_OVER_MB", 16) * MIB / page_size;
	unsigned long step = env_ulong("HMM_RS_STEP_MB", 24) * MIB / page_size;
	int nf = variant->ndev * variant->nfiles, i, d, status;
	unsigned long per, on_dev[2] = { 0 };
	pthread_barrierattr_t ba;
	struct fill_shared *sh;
	struct fill_args arg;
	pid_t pid[2];
	double t0 = now();

	ASSERT_LT(0, step);
	/* Each device gets cap + over pages, over its files. */
	per = (cap + over) / variant->nfiles;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, sh);
	memset(sh, 0, sizeof(*sh));
	ASSERT_EQ(0, pthread_barrierattr_init(&ba));
	ASSERT_EQ(0, pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED));
	ASSERT_EQ(0, pthread_barrier_init(&sh->full, &ba, nf));
	ASSERT_EQ(0, pthread_barrier_init(&sh->freed, &ba, nf));
	note("%d device(s), %d file(s) each, %lu pages (%lu MiB) per file, %s pages, steps of %lu pages; device capacity %lu pages\n",
	     variant->ndev, variant->nfiles, per, per * page_size / MIB,
	     variant->thp ? "THP-backed" : "small", step, cap);

	fflush(stdout);
	fflush(stderr);
	for (i = 0; i < nf; i++) {
		arg = (struct fill_args) {
			.dev = 2 + i / variant->nfiles,
			.npages = per,
			.step = step,
			.thp = variant->thp,
			.unmap = i >= nf - variant->unmap,
			.id = 10 + i,
		};
		pid[i] = fork();
		ASSERT_LE(0, pid[i]);
		if (!pid[i]) {
			fill_child(sh, &sh->f[i], &arg);
			_exit(0);
		}
	}
	for (i = 0; i < nf; i++) {
		ASSERT_EQ(pid[i], waitpid(pid[i], &status, 0));
		if (!WIFEXITED(status))
			note("file %d: child killed by signal %d\n", i,
			     WTERMSIG(status));
	}

	for (i = 0; i < nf; i++) {
		struct filler *f = &sh->f[i];

		d = i / variant->nfiles;
		on_dev[d] += f->on_dev;
		note("file %d (dmirror%d): %lu of %lu pages on the device when full; %lu step(s) partial; MIGRATE_TO_SYS %s, %lu moved, %d left; a fresh migration of %lu pages: %s, %lu moved; %lu wrong page(s)\n",
		     i, 2 + d, f->on_dev, per, f->partial_steps,
		     i >= nf - variant->unmap ? "(unmapped instead)" :
		     errname(-f->to_sys_err),
		     f->back, f->left_on_dev, step, errname(-f->fresh_err),
		     f->fresh_dev, f->bad);
		tally_print(&f->to_dev);
		if (f->ok_but_missing)
			note("file %d: %lu page(s) of steps that returned 0 are not on the device\n",
			     i, f->ok_but_missing);
		EXPECT_TRUE(f->done);
		EXPECT_EQ(0, f->setup_err);
		EXPECT_EQ(0, f->to_dev.bad);
		EXPECT_EQ(0, f->ok_but_missing);
		EXPECT_EQ(0, f->snap_err);
		EXPECT_EQ(0, f->read_err);
		EXPECT_EQ(0, f->to_sys_err);
		EXPECT_EQ(0, f->left_on_dev);
		EXPECT_EQ(0, f->fresh_err);
		EXPECT_EQ(step, f->fresh_dev);
		EXPECT_EQ(0, f->bad);
	}
	/* Exactly the device's pages were in use: none lost, none made up. */
	for (d = 0; d < variant->ndev; d++) {
		note("dmirror%d: %lu of its %lu pages in use when full\n",
		     2 + d, on_dev[d], cap);
		EXPECT_EQ(cap, on_dev[d]);
	}
	note("%.1f s in all\n", now() - t0);
	pthread_barrier_destroy(&sh->full);
	pthread_barrier_destroy(&sh->freed);
	munmap(sh, sizeof(*sh));
}

TEST_HARNESS_MAIN
