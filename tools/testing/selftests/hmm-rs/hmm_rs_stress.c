// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs stress test: several processes, each with several threads, drive
 * the dmirror devices against a reference model of their memory, while
 * other threads of the same process remap, fork and zap, and every byte is
 * checked against the model at checkpoints.
 *
 * Each worker process maps three regions:
 *  - "small": private anonymous, MADV_NOHUGEPAGE, cut into slots of
 *    SLOT_PAGES pages dealt round-robin to the threads (neighbouring slots
 *    belong to different threads: they share VMAs and page tables);
 *  - "huge": private anonymous, 2 MiB aligned, MADV_HUGEPAGE, one 2 MiB
 *    block per thread (THP migrations, splits and collapses);
 *  - "shared": a memfd mapped MAP_SHARED by every worker; each thread owns
 *    a slice (file pages: they do not migrate, a zap keeps their contents).
 * Every page has exactly one owner thread, which alone changes its contents,
 * so its expected contents (the model: a full copy of every page) stay
 * deterministic. An owner runs random operations on random ranges of its
 * pages, each through a random device of the case:
 *  - CPU writes of random bytes (a byte, a page, a span) and CPU reads,
 *    checked against the model (a device page faults back);
 *  - HMM_DMIRROR_READ (checked against the model: the device sees what the
 *    CPU sees), HMM_DMIRROR_WRITE (updates the model; on read-only pages it
 *    must fail and change nothing; a failed WRITE may have written some
 *    pages: each must then hold either its old or its new contents);
 *  - MIGRATE_TO_DEV (the data it returns checked) and MIGRATE_TO_SYS;
 *  - SNAPSHOT: every byte must be an encoding the device can report (never
 *    DEV_PRIVATE_REMOTE, which needs a fault; no WRITE on read-only pages;
 *    DEV_COHERENT_* only where coherent devices are in the case); in the
 *    small region, where nothing but the owner moves its pages (no
 *    khugepaged), it must also agree with where the owner's own operations
 *    left each page: on device d after a snapshot saw it there, in system
 *    memory after a CPU access or a zap, until an operation makes that
 *    unknown; and after a MIGRATE_TO_SYS through d no page of the range may
 *    still be on d (a third of the small-region operations are followed by
 *    such a snapshot, through a random device);
 *  - EXCLUSIVE (the data it returns checked), then a CPU read of every page,
 *    after which CHECK_EXCLUSIVE must report no exclusive entry left;
 *  - where the driver has it, HMM_RS_MIGRATE to a node (HMM_RS_DST_NODE,
 *    node 0 or 1): any selection, from the device or another one of the
 *    case (HMM_RS_REQ_SRC_DEV), maybe whole THPs, maybe faulted in first,
 *    maybe with the node filter (HMM_RS_REQ_NOT_ON_NODE). Its status
 *    bytes and counts must agree (ON_NODE only with the filter, WHOLE only
 *    with HMM_RS_REQ_THP); the pages keep their contents (looked at with
 *    the CPU half the time); in the model those MIGRATED or left ON_NODE
 *    are system pages, which the snapshots then check. In the small
 *    region, while nothing but the owner moves them, move_pages(2) must
 *    find every page MIGRATED or ON_NODE on the node, an ON_NODE page
 *    there before the call too, and no page that was already there
 *    MIGRATED despite the filter;
 *  - MADV_DONTNEED (anonymous pages read zero), PUNCH_HOLE (shared: zero),
 *    mmap(MAP_FIXED) over the range (anonymous: zero; shared: unchanged),
 *    mremap() away and back (unchanged), mprotect() read-only and back;
 *  - fork(): the child checks the forking thread's private pages against
 *    the model as it was at the fork, then scribbles on its copies, while
 *    the parent goes on changing them.
 * A "chaos" thread per process migrates random ranges to and from the
 * devices (whoever owns them; in the small region it marks the slots it
 * moves, so that their owners make no assumption meanwhile), snapshots,
 * reads ranges through the devices, pages out, collapses and compacts,
 * and where the driver has it moves pages with HMM_RS_MIGRATE (to a
 * device, back, device to device, or to a node as above; its status bytes
 * and counts checked): none of which may change a byte.
 *
 * Every round (HMM_RS_STRESS_OPS operations per thread) the threads of a
 * process stop at a barrier and one checks every byte of the process's
 * pages through a device READ and with the CPU, then migrates everything to
 * a device or back, or (where the driver has HMM_RS_MIGRATE) to a node,
 * after which the CPU must find every byte; other processes go on
 * meanwhile. The operations stop
 * at 65% of a case's time; then each worker migrates everything back (no
 * page may stay on a device), checks every byte again, and all workers
 * check the whole shared memfd, every slice, against what its owners'
 * models say. The workers close their files only then: the C driver
 * evicts all device pages on release, which races with process exit (the
 * kernel bug hmm_rs_unload's exit_during_unload skips).
 *
 * ENOMEM, EBUSY (and ENOENT from MIGRATE_TO_DEV or EXCLUSIVE, where a page
 * did not end up in the device page table) may come from contention: they
 * are counted and printed, not failed. Any other error on a valid range is.
 *
 * Cases: private (hmm_dmirror0 and 1), coherent (2 and 3; skipped when the
 * module has no device-coherent memory), mixed (all four, twice the forks).
 * Each prints its rounds, operations, bytes checked and corruptions, and
 * fails on any corruption, snapshot disagreement or unexpected error.
 *
 * A kernel bug is avoided unless HMM_RS_KERNEL_BUGS=1: see
 * avoid_thp_split_bug().
 *
 * Environment: HMM_RS_STRESS_SEED (default: from the clock),
 * HMM_RS_STRESS_SECS (60, shared by the cases), HMM_RS_STRESS_PROCS (3),
 * HMM_RS_STRESS_THREADS (3 owners per process, plus the chaos thread;
 * with HMM_RS_DEBUG=1, a debug kernel, 2 processes of 2), HMM_RS_STRESS_OPS
 * (32 per round), HMM_RS_STRESS_ROUNDS (0: as many as the time allows),
 * HMM_RS_STRESS_CASES (the cases to run, in this order, comma-separated;
 * the time is shared by those), HMM_RS_STRESS_CHAOS and
 * HMM_RS_STRESS_FORKS (1; 0 turns them off). A worker with a thread in one
 * operation for over HMM_RS_STRESS_STUCK_SECS (60; 180 with HMM_RS_DEBUG=1),
 * or still running 120 s past its case's time, is reported with what each
 * of its threads was doing and their kernel stacks, and killed (a failure).
 * The seed fixes each thread's sequence of operations; the interleaving is
 * the scheduler's, so a replay reproduces the operations, not always the
 * race. A failure prints the command that replays the seed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest.h"
#include "hmm_rs.h"
#include "uapi/hmm_rs.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define NDEV 4
#define SLOT_PAGES 32		/* small region: pages per slot */
#define SLOTS_PER_THREAD 4
#define HUGE_PAGES 512		/* huge region: pages per thread (2 MiB) */
#define SHARED_PAGES 16		/* shared region: pages per thread */
#define MAX_OP_PAGES HUGE_PAGES
#define HIST 8			/* operations remembered per page */
#define HIST_SNAP 0x100		/* hist.err of a snapshot: 0x100 | its byte */
#define MAX_ERRNO 134
#define MAX_DETAILS 20		/* reports of each kind printed per case */
#define ABORT_AFTER 200		/* corrupted pages before a case gives up */
#define GRACE_SECS 120		/* past the budget, before workers are killed */
#define MAX_PROCS 16
#define MAX_THREADS 8

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)

enum { R_SMALL, R_HUGE, R_SHARED, NREG };
static const char *const reg_names[NREG] = { "small", "huge", "shared" };

/* Operations, as counted and as remembered per page. */
enum {
	OP_CPU_WRITE, OP_CPU_READ, OP_READ, OP_WRITE, OP_TO_DEV, OP_TO_SYS,
	OP_SNAPSHOT, OP_EXCL, OP_CHECK_EXCL, OP_ZAP, OP_PUNCH, OP_REMAP,
	OP_MREMAP, OP_MPROTECT, OP_TO_NODE, OP_FORK,
	/* the chaos thread's */
	OP_C_TO_DEV, OP_C_TO_SYS, OP_C_READ, OP_C_SNAPSHOT, OP_C_MADV,
	OP_C_COLLAPSE, OP_C_COMPACT, OP_C_RS_MIGRATE,
	/* checkpoints and the end */
	OP_K_READ, OP_K_TO_DEV, OP_K_TO_SYS, OP_K_TO_NODE, OP_K_SNAPSHOT, OP_INIT,
	NOPS
};

static const char *const op_names[NOPS] = {
	"CPU_WRITE", "CPU_READ", "READ", "WRITE", "MIGRATE_TO_DEV",
	"MIGRATE_TO_SYS", "SNAPSHOT", "EXCLUSIVE", "CHECK_EXCLUSIVE",
	"DONTNEED", "PUNCH_HOLE", "REMAP", "MREMAP", "MPROTECT", "TO_NODE", "FORK",
	"chaos:TO_DEV", "chaos:TO_SYS", "chaos:READ", "chaos:SNAPSHOT",
	"chaos:MADVISE", "chaos:COLLAPSE", "chaos:COMPACT", "chaos:HMM_RS_MIGRATE",
	"ckpt:READ", "ckpt:TO_DEV", "ckpt:TO_SYS", "ckpt:TO_NODE", "ckpt:SNAPSHOT",
	"init",
};

/* Where the owner knows a small-region page to be (else a device number). */
#define ST_UNKNOWN 0xff
#define ST_SYS 0xfe

/* Settings of a run. */
struct cfg {
	uint64_t seed;
	double secs;		/* per case */
	int procs, threads, ops, chaos, forks, kernel_bugs;
	double stuck;		/* seconds in one operation that make a hang */
	unsigned long rounds;
};

/* What a thread is doing, for the report of a hang. */
struct cur {
	int op, dev, r;
	unsigned long p, n, opno;
	double since;
};

/* What every process of a case counts, in memory they share. */
struct stats {
	unsigned long rounds, ops[NOPS], err[NOPS][MAX_ERRNO + 1], us[NOPS];
	unsigned long cpu_bytes, dev_bytes, fork_bytes, forks;
	unsigned long snap_pages, snap_asserted, excl_held, excl_revoked;
	unsigned long corrupt_bytes, corrupt_pages, mismatches, unexpected;
	unsigned long details[3], arrive[2], abort;
	unsigned long late_ms, final_ms;	/* the most of any worker */
	unsigned long ckpts, ckpt_us, barrier_us;
	/* HMM_RS_MIGRATE to a node: calls, pages moved, left ON_NODE, placed */
	unsigned long node_calls, node_moved, node_kept, node_placed;
	struct cur cur[MAX_PROCS][MAX_THREADS + 1];
};

static struct cfg cfg;
static struct stats *st;
static long psz;
/*
 * The owners run operations until ops_end, a share of the budget; the last
 * checks and the end must fit in the rest, until deadline.
 */
static double ops_end, deadline;
#define OPS_SHARE 0.65

/* A case: its name and devices. */
struct tcase {
	const char *name;
	int devs[NDEV], ndevs, fork_weight;
};

/* Per process (worker). */
struct region {
	char *base;
	unsigned long pages, first;	/* first: index in the page arrays */
};

struct hist {
	uint32_t opno, p;	/* the op's range: [p, p + n) */
	uint16_t n;
	uint8_t op, dev;
	uint16_t err;
};

struct thr {
	int id;
	uint64_t rng;
	pthread_t th;
	char *buf;
	unsigned char *perm;
	char *scratch;		/* reserved room for mremap() */
	uint64_t ep[SLOTS_PER_THREAD];	/* epoch of each small slot's states */
	uint64_t e0;			/* of the slot of the current op */
	long slot;			/* -1: not a small-region op */
	int last_op;
	pid_t child;
	int child_ops;
	unsigned long opno;
};

static const struct tcase *tc;
static int proc_id, fds[NDEV] = { -1, -1, -1, -1 }, memfd;
static struct region reg[NREG];
static unsigned long total_pages, shared_first;	/* this process's slice */
static char *model, *chk, *expect;
static unsigned char *pstate, *pro;
static struct hist (*hist)[HIST];
static unsigned char *hidx;
static struct thr thr[MAX_THREADS];
static pthread_barrier_t round_barrier;
/*
 * Odd while something other than their owner may move pages: pseq for all
 * of the process's (checkpoints), slot_seq[] for a small slot (the chaos
 * thread).
 */
static unsigned long pseq, *slot_seq;
static int stop_threads, stop_chaos;
/* Whether the driver has HMM_RS_MIGRATE (include/uapi/hmm_rs.h). */
static bool rs_migrate;
/* The nodes HMM_RS_DST_NODE moves to: 0, and 1 if it has memory. */
static int nnodes = 1;

/*
 * One "# " line in a single write(): processes and threads print at once,
 * and a fork child must not touch stdio's locks.
 */
static void say(const char *fmt, ...)
{
	char line[1024] = "# ";
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line + 2, sizeof(line) - 3, fmt, ap);
	va_end(ap);
	n += 2;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(1, line, n) < 0)
		return;
}

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return s ? s : "E?";
}

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static unsigned long pick(uint64_t *s, unsigned long n)
{
	return n ? next(s) % n : 0;
}

/*
 * Random contents, cheaply (TCG): an arithmetic sequence of 64-bit words
 * from a random start with a random odd step. Every word of a fill
 * differs, and so do (almost surely) any two fills.
 */
static void fill_random(uint64_t *s, char *p, size_t len)
{
	uint64_t v = next(s), k = next(s) | 1;

	for (; len >= 8; len -= 8, p += 8, v += k)
		memcpy(p, &v, 8);
	memcpy(p, &v, len);
}

static bool coherent(int d)
{
	return d >= 2;
}

static int nothers(int d, bool coh)
{
	int i, n = 0;

	for (i = 0; i < tc->ndevs; i++)
		if (tc->devs[i] != d && coherent(tc->devs[i]) == coh)
			n++;
	return n;
}

static int other(int d, bool coh)
{
	int i;

	for (i = 0; i < tc->ndevs; i++)
		if (tc->devs[i] != d && coherent(tc->devs[i]) == coh)
			return tc->devs[i];
	return -1;
}

static char *addr_of(int r, unsigned long p)
{
	return reg[r].base + p * psz;
}

static char *model_of(int r, unsigned long p)
{
	return model + (reg[r].first + p) * psz;
}

static unsigned long idx(int r, unsigned long p)
{
	return reg[r].first + p;
}

/* The owner thread of page @p of region @r; -1: another process's. */
static int owner_of(int r, unsigned long p)
{
	switch (r) {
	case R_SMALL:
		return (p / SLOT_PAGES) % cfg.threads;
	case R_HUGE:
		return (p / HUGE_PAGES) % cfg.threads;
	default:
		if (p < shared_first ||
		    p >= shared_first + cfg.threads * SHARED_PAGES)
			return -1;
		return (p - shared_first) / SHARED_PAGES;
	}
}

/* Op -1: waiting at the round barrier; -2: reaping a fork child. */
static void doing(struct thr *t, int op, int dev, int r, unsigned long p,
		  unsigned long n)
{
	struct cur *c = &st->cur[proc_id][t->id];

	c->op = op;
	c->dev = dev;
	c->r = r;
	c->p = p;
	c->n = n;
	c->opno = t->opno;
	c->since = now();
}

static void hist_add(struct thr *t, int r, unsigned long p, unsigned long n,
		     int op, int dev, int res)
{
	unsigned long i;

	for (i = p; i < p + n; i++) {
		unsigned long k = idx(r, i);
		struct hist *h = &hist[k][hidx[k]++ % HIST];

		h->opno = t ? t->opno : 0;
		h->p = p;
		h->n = n;
		h->op = op;
		h->dev = dev < 0 ? 0xff : dev;
		h->err = res < 0 ? -res : res;
	}
}

static void count(int op, int err)
{
	INC(st->ops[op], 1);
	if (err < 0)
		err = -err;
	INC(st->err[op][err > MAX_ERRNO ? MAX_ERRNO : err], 1);
}

static void unexpected(struct thr *t, int op, int dev, int r, unsigned long p,
		       unsigned long n, const char *what)
{
	INC(st->unexpected, 1);
	if (INC(st->details[0], 1) < MAX_DETAILS)
		say("error: process %d thread %d op %lu: %s dev %d, %s pages %lu-%lu: %s",
		    proc_id, t ? t->id : -1, t ? t->opno : 0, op_names[op], dev,
		    reg_names[r], p, p + n - 1, what);
}

/* The last operations on page index @k, for a report. */
static void history(unsigned long k, char *h, int size)
{
	int len = 0, m;

	h[0] = 0;
	for (m = 0; m < HIST && len < size; m++) {
		struct hist *x = &hist[k][(hidx[k] + m) % HIST];

		if (!x->op && !x->opno)
			continue;
		len += snprintf(h + len, size - len, " #%u %s", x->opno,
				op_names[x->op]);
		if (x->dev != 0xff && len < size)
			len += snprintf(h + len, size - len, "(dev%d)", x->dev);
		if (len < size)
			len += snprintf(h + len, size - len, "[%u+%u]", x->p, x->n);
		if ((x->err & HIST_SNAP) && len < size)
			len += snprintf(h + len, size - len, "=0x%02x", x->err & 0xff);
		else if (x->err && len < size)
			len += snprintf(h + len, size - len, "=%s", errname(x->err));
	}
	if (!h[0])
		snprintf(h, size, " none");
}

/*
 * Compares @n pages from page @p of region @r, as @got holds them, with the
 * model; counts and reports what differs. Returns the bytes that differ.
 */
static unsigned long compare(struct thr *t, int r, unsigned long p,
			     unsigned long n, const char *got, const char *exp,
			     int op, int dev, unsigned long *bytes)
{
	unsigned long i, j, bad = 0;

	INC(*bytes, n * psz);
	for (i = 0; i < n; i++) {
		const unsigned char *e, *g = (const unsigned char *)got + i * psz;
		unsigned long k = idx(r, p + i), nb = 0, first = 0;
		char h[480], src[80] = "";
		unsigned long o;
		int rr;

		e = (const unsigned char *)(exp ? exp + i * psz : model_of(r, p + i));
		if (!memcmp(e, g, psz))
			continue;
		for (j = 0; j < (unsigned long)psz; j++)
			if (e[j] != g[j] && !nb++)
				first = j;
		bad += nb;
		INC(st->corrupt_pages, 1);
		if (INC(st->details[1], 1) >= MAX_DETAILS)
			continue;
		history(k, h, sizeof(h));
		/* Whose contents are these? */
		for (o = 0; o < total_pages; o++)
			if (!memcmp(model + o * psz, g, psz))
				break;
		for (rr = 0; o < total_pages && rr < NREG; rr++)
			if (o >= reg[rr].first && o < reg[rr].first + reg[rr].pages)
				snprintf(src, sizeof(src), " (what %s page %lu should hold)",
					 reg_names[rr], o - reg[rr].first);
		if (!*src && g[0] == 0 && !memcmp(g, g + 1, psz - 1))
			snprintf(src, sizeof(src), " (all zeroes)");
		say("corruption: process %d thread %d op %lu %s dev %d: %s page %lu (%p) offset %lu: expected 0x%02x got 0x%02x, %lu bytes of the page differ%s; owner %d; last ops:%s",
		    proc_id, t ? t->id : -1, t ? t->opno : 0, op_names[op], dev,
		    reg_names[r], p + i, addr_of(r, p + i), first, e[first],
		    g[first], nb, src, owner_of(r, p + i), h);
	}
	if (bad) {
		INC(st->corrupt_bytes, bad);
		if (LOAD(st->corrupt_pages) > ABORT_AFTER)
			STORE(st->abort, 1);
	}
	return bad;
}

static bool any_ro(int r, unsigned long p, unsigned long n)
{
	unsigned long i;

	for (i = p; i < p + n; i++)
		if (pro[idx(r, i)])
			return true;
	return false;
}

/* Page states: kept for the small region only. */
static void set_state(int r, unsigned long p, unsigned long n, int s)
{
	if (r == R_SMALL)
		memset(pstate + idx(r, p), s, n);
}

static bool case_has_coherent(void)
{
	return coherent(tc->devs[tc->ndevs - 1]);
}

/* CPU access: a device-private page faults back, a coherent one stays. */
static void cpu_touched(int r, unsigned long p, unsigned long n, bool write)
{
	unsigned long i;

	if (r != R_SMALL)
		return;
	for (i = p; i < p + n; i++) {
		unsigned char *s = &pstate[idx(r, i)];

		if (!case_has_coherent())
			*s = ST_SYS;
		if (*s == ST_UNKNOWN || *s == ST_SYS)
			continue;
		/* A write to a coherent page may copy it (COW). */
		if (coherent(*s))
			*s = write ? ST_UNKNOWN : *s;
		else
			*s = ST_SYS;
	}
}

static void invalidate_slot(unsigned long slot)
{
	set_state(R_SMALL, slot * SLOT_PAGES, SLOT_PAGES, ST_UNKNOWN);
}

static void invalidate_states(struct thr *t)
{
	int j;

	for (j = 0; j < SLOTS_PER_THREAD; j++)
		invalidate_slot(t->id + j * cfg.threads);
}

/* The epoch of a small slot: odd halves while its pages may move. */
static uint64_t epoch(unsigned long slot)
{
	return (uint64_t)LOAD(pseq) << 32 | (uint32_t)LOAD(slot_seq[slot]);
}

static bool odd(uint64_t e)
{
	return e & (1ULL << 32 | 1);
}

/*
 * The page states of a slot hold while nothing but its owner moves its
 * pages: no fork child of the owner alive, and the slot's epoch unchanged
 * and even since the states were set.
 */
static void op_begin(struct thr *t, int r, unsigned long p)
{
	uint64_t e;
	int j;

	for (j = 0; j < SLOTS_PER_THREAD; j++) {
		e = epoch(t->id + j * cfg.threads);
		if (e != t->ep[j] || odd(e) || t->child) {
			invalidate_slot(t->id + j * cfg.threads);
			t->ep[j] = e;
		}
	}
	t->slot = r == R_SMALL ? (long)(p / SLOT_PAGES) : -1;
	t->e0 = t->slot < 0 ? 0 : epoch(t->slot);
}

/* Whether the current op's page states may be relied on. */
static bool stable(struct thr *t)
{
	return t->slot >= 0 && !t->child && !odd(t->e0) &&
	       epoch(t->slot) == t->e0;
}

static void op_end(struct thr *t)
{
	if (t->slot >= 0 && !stable(t)) {
		invalidate_slot(t->slot);
		t->ep[t->slot / cfg.threads] = epoch(t->slot);
	}
}

/* What a snapshot byte says of where a page is. */
enum { C_SYS, C_NONE, C_LOCAL, C_COH_REMOTE, C_INVALID };

/* @hole: HMM_DMIRROR_PROT_ERROR is no error here (see check_snapshot()). */
static int classify(unsigned char v, int d, bool ro, bool hole)
{
	int rw = v & 3;

	if (v == HMM_DMIRROR_PROT_NONE || (hole && v == HMM_DMIRROR_PROT_ERROR))
		return C_NONE;
	if ((rw != HMM_DMIRROR_PROT_READ && rw != HMM_DMIRROR_PROT_WRITE) ||
	    (v & HMM_DMIRROR_PROT_PUD) || (ro && rw == HMM_DMIRROR_PROT_WRITE))
		return C_INVALID;
	switch (v & 0xf0) {
	case 0:
		return C_SYS;
	case HMM_DMIRROR_PROT_ZERO:
		return rw == HMM_DMIRROR_PROT_READ ? C_SYS : C_INVALID;
	case HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL:
		return coherent(d) ? C_INVALID : C_LOCAL;
	case HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL:
		return coherent(d) ? C_LOCAL : C_INVALID;
	case HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE:
		return nothers(d, true) ? C_COH_REMOTE : C_INVALID;
	default:	/* DEV_PRIVATE_REMOTE: only a fault would see one */
		return C_INVALID;
	}
}

/*
 * Checks snapshot @perm of @n pages from @p through device @d. @assert: the
 * page states may be relied on (an owner in a stable epoch). Updates them.
 */
static void check_snapshot(struct thr *t, int r, unsigned long p,
			   unsigned long n, int d, const unsigned char *perm,
			   bool assert, bool owner, int op)
{
	unsigned long i;

	INC(st->snap_pages, n);
	for (i = 0; i < n; i++) {
		unsigned long k = idx(r, p + i);
		/*
		 * ERROR: a hole (someone else's mremap() under way), or in the
		 * huge region a device-private PMD of another device, which
		 * hmm_vma_handle_absent_pmd() reports so.
		 */
		int c = classify(perm[i], d, owner && pro[k], !owner || r == R_HUGE);
		int s = pstate[k], ok = 1;
		char what[400];

		if (c == C_INVALID) {
			snprintf(what, sizeof(what),
				 "page %lu: snapshot byte 0x%02x is not one dev %d can report%s",
				 p + i, perm[i], d, owner && pro[k] ? " (read-only page)" : "");
			unexpected(t, op, d, r, p, n, what);
			continue;
		}
		if (!owner || r != R_SMALL)
			continue;
		hist_add(t, r, p + i, 1, op, d, -(HIST_SNAP | perm[i]));
		if (assert && s != ST_UNKNOWN) {
			INC(st->snap_asserted, 1);
			if (s == ST_SYS)
				ok = c == C_SYS || c == C_NONE;
			else if (s == d)
				ok = c == C_LOCAL;
			else if (!coherent(s))
				ok = c == C_NONE;
			else
				ok = c == C_COH_REMOTE;
			if (!ok) {
				INC(st->mismatches, 1);
				if (INC(st->details[2], 1) < MAX_DETAILS) {
					history(k, what, sizeof(what));
					say("snapshot disagrees: process %d thread %d op %lu (after %s): dev %d says 0x%02x for %s page %lu, which the owner's operations left %s%d; last ops:%s",
					    proc_id, t->id, t->opno, op_names[t->last_op],
					    d, perm[i], reg_names[r], p + i,
					    s == ST_SYS ? "in system memory, " : "on dev",
					    s == ST_SYS ? 0 : s, what);
				}
			}
		}
		switch (c) {
		case C_LOCAL:
			s = d;
			break;
		case C_COH_REMOTE:
			s = nothers(d, true) == 1 ? other(d, true) : ST_UNKNOWN;
			break;
		case C_SYS:
			s = ST_SYS;
			break;
		default:	/* none, or on another private device */
			if (!ok || (s != ST_SYS &&
				    (s >= NDEV || s == d || coherent(s))))
				s = nothers(d, false) ? ST_UNKNOWN : ST_SYS;
			break;
		}
		pstate[k] = s;
	}
}

/*
 * A kernel bug (7.3): migrating a PMD-mapped THP that a fork child still
 * maps to device pages given one by one (device-coherent memory, in either
 * driver) splits the folio but only this process's PMD: the child's PMD
 * migration entry is restored as a huge mapping of 512 unrelated pages
 * (wrong data, "Bad rss-counter state", device pages leaked, Oopses). The
 * split is migrate_vma_pages()'s, for any destination given page by page:
 * a THP collected whole (HMM_RS_REQ_THP) for a node with no huge page free
 * gets single pages there too. The whole of an aligned 2 MiB block goes to
 * a coherent device, or with HMM_RS_REQ_THP to a node, only when no fork
 * child can be alive (checkpoints, the end), unless HMM_RS_KERNEL_BUGS=1.
 */
static void keep_thps_partial(int r, unsigned long p, unsigned long *n)
{
	unsigned long b = (p + HUGE_PAGES - 1) / HUGE_PAGES * HUGE_PAGES;

	if (r == R_HUGE && !cfg.kernel_bugs && b + HUGE_PAGES <= p + *n)
		*n = b + HUGE_PAGES - 1 - p;
}

static void avoid_thp_split_bug(int d, int r, unsigned long p, unsigned long *n)
{
	if (coherent(d))
		keep_thps_partial(r, p, n);
}

/* Which errors an operation may meet under contention. */
static bool tolerated(int op, int err, bool ro)
{
	switch (err) {
	case 0:
	case -EBUSY:
	case -ENOMEM:
		return true;
	case -ENOENT:
		return op == OP_TO_DEV || op == OP_EXCL || op == OP_K_TO_DEV;
	case -EPERM:
	case -EFAULT:
		return op == OP_WRITE && ro;
	default:
		return false;
	}
}

static int dev_cmd(struct thr *t, int op, unsigned long req, int d, int r,
		   unsigned long p, unsigned long n, void *buf, uint64_t *cpages)
{
	struct hmm_dmirror_cmd c;
	int ret = hmm_rs_cmd(fds[d], req, (uintptr_t)addr_of(r, p), buf, n, &c);
	char what[64];

	count(op, ret);
	if (cpages)
		*cpages = ret ? 0 : c.cpages;
	/*
	 * A WRITE through a device-private device meets EFAULT where a page of
	 * the range sits read-only in that device's memory (after a fork or
	 * mprotect(PROT_READ)): hmm_range_fault() does not fault the owner's
	 * own pages for write, and both drivers refuse the read-only entry.
	 * The model does not track which device pages are read-only.
	 */
	if (!(op == OP_WRITE && ret == -EFAULT && !coherent(d)) &&
	    !tolerated(op, ret, op == OP_WRITE && any_ro(r, p, n))) {
		snprintf(what, sizeof(what), "%s", errname(-ret));
		unexpected(t, op, d, r, p, n, what);
	}
	return ret;
}

static void snapshot_op(struct thr *t, int op, int d, int r, unsigned long p,
			unsigned long n)
{
	int ret = dev_cmd(t, op, HMM_DMIRROR_SNAPSHOT, d, r, p, n, t->perm, NULL);

	if (!ret)
		check_snapshot(t, r, p, n, d, t->perm, stable(t), true, op);
}

/* After MIGRATE_TO_SYS through @d, nothing of the range may stay on @d. */
static void check_left_device(struct thr *t, int d, int r, unsigned long p,
			      unsigned long n)
{
	unsigned long i, left = 0;
	int tries;

	for (tries = 0; tries < 4; tries++) {
		if (!stable(t))
			return;
		if (hmm_rs_cmd(fds[d], HMM_DMIRROR_SNAPSHOT,
			       (uintptr_t)addr_of(r, p), t->perm, n, NULL))
			return;
		for (i = left = 0; i < n; i++)
			left += classify(t->perm[i], d, false, false) == C_LOCAL;
		if (!left)
			return;
		/* Retry: a page lock held a moment can leave a page behind. */
		usleep(1000);
		hmm_rs_cmd(fds[d], HMM_DMIRROR_MIGRATE_TO_SYS,
			   (uintptr_t)addr_of(r, p), NULL, n, NULL);
	}
	if (!stable(t))
		return;
	INC(st->mismatches, 1);
	if (INC(st->details[2], 1) < MAX_DETAILS)
		say("stuck: process %d thread %d op %lu: %lu of %s pages %lu-%lu still on dev %d after 4 MIGRATE_TO_SYS",
		    proc_id, t->id, t->opno, left, reg_names[r], p, p + n - 1, d);
}

static void op_cpu_write(struct thr *t, int r, unsigned long p, unsigned long n)
{
	size_t span = n * psz, off, len;

	switch (pick(&t->rng, 4)) {
	case 0:		/* a few bytes */
		len = 1 + pick(&t->rng, 16);
		break;
	case 1:		/* a page */
		len = psz;
		break;
	case 2:		/* the range */
		len = span;
		break;
	default:
		len = 1 + pick(&t->rng, span);
		break;
	}
	if (len > span)
		len = span;
	off = pick(&t->rng, span - len + 1);
	if (len == (size_t)psz && pick(&t->rng, 2))
		off -= off % psz;
	fill_random(&t->rng, t->buf, len);
	memcpy(addr_of(r, p) + off, t->buf, len);
	memcpy(model_of(r, p) + off, t->buf, len);
	count(OP_CPU_WRITE, 0);
	hist_add(t, r, p + off / psz, (off + len - 1) / psz - off / psz + 1,
		 OP_CPU_WRITE, -1, 0);
	cpu_touched(r, p + off / psz, (off + len - 1) / psz - off / psz + 1,
		    true);
}

static void op_cpu_read(struct thr *t, int r, unsigned long p, unsigned long n)
{
	count(OP_CPU_READ, 0);
	compare(t, r, p, n, addr_of(r, p), NULL, OP_CPU_READ, -1, &st->cpu_bytes);
	hist_add(t, r, p, n, OP_CPU_READ, -1, 0);
	cpu_touched(r, p, n, false);
}

static void op_read(struct thr *t, int d, int r, unsigned long p, unsigned long n)
{
	uint64_t cpages;
	int ret = dev_cmd(t, OP_READ, HMM_DMIRROR_READ, d, r, p, n, t->buf, &cpages);
	unsigned long i;

	hist_add(t, r, p, n, OP_READ, d, ret);
	if (ret)
		return;
	if (cpages != n)
		unexpected(t, OP_READ, d, r, p, n, "cpages is not npages");
	compare(t, r, p, n, t->buf, NULL, OP_READ, d, &st->dev_bytes);
	/* The fault brought back what another private device held. */
	if (r == R_SMALL)
		for (i = p; i < p + n; i++) {
			unsigned char *s = &pstate[idx(r, i)];

			if (*s < NDEV && *s != d && !coherent(*s))
				*s = ST_SYS;
		}
}

static void op_write(struct thr *t, int d, int r, unsigned long p, unsigned long n)
{
	bool ro = any_ro(r, p, n);
	uint64_t cpages;
	unsigned long i;
	int ret;

	fill_random(&t->rng, t->buf, n * psz);
	ret = dev_cmd(t, OP_WRITE, HMM_DMIRROR_WRITE, d, r, p, n, t->buf, &cpages);
	hist_add(t, r, p, n, OP_WRITE, d, ret);
	set_state(r, p, n, ST_UNKNOWN);
	if (!ret && !ro) {
		if (cpages != n)
			unexpected(t, OP_WRITE, d, r, p, n, "cpages is not npages");
		memcpy(model_of(r, p), t->buf, n * psz);
		return;
	}
	if (!ret)
		unexpected(t, OP_WRITE, d, r, p, n, "WRITE to read-only pages succeeded");
	/* Each page holds its old contents, or (not read-only) its new ones. */
	for (i = 0; i < n; i++) {
		char *a = addr_of(r, p + i), *b = t->buf + i * psz;

		if (!memcmp(a, model_of(r, p + i), psz))
			continue;
		if (!pro[idx(r, p + i)] && !memcmp(a, b, psz)) {
			memcpy(model_of(r, p + i), b, psz);
			continue;
		}
		compare(t, r, p + i, 1, a, NULL, OP_WRITE, d, &st->cpu_bytes);
		/* Reported: go on from what is there. */
		memcpy(model_of(r, p + i), a, psz);
	}
}

static void op_to_dev(struct thr *t, int d, int r, unsigned long p, unsigned long n)
{
	unsigned long i;
	int ret;

	avoid_thp_split_bug(d, r, p, &n);
	ret = dev_cmd(t, OP_TO_DEV, HMM_DMIRROR_MIGRATE_TO_DEV, d, r, p, n, t->buf,
		      NULL);
	hist_add(t, r, p, n, OP_TO_DEV, d, ret);
	if (!ret)
		compare(t, r, p, n, t->buf, NULL, OP_TO_DEV, d, &st->dev_bytes);
	/* A page on a device stays there; the others may have moved. */
	if (r == R_SMALL)
		for (i = p; i < p + n; i++)
			if (pstate[idx(r, i)] >= NDEV)
				pstate[idx(r, i)] = ST_UNKNOWN;
	if (pick(&t->rng, 2))
		snapshot_op(t, OP_SNAPSHOT, d, r, p, n);
}

static void op_to_sys(struct thr *t, int d, int r, unsigned long p, unsigned long n)
{
	int ret = dev_cmd(t, OP_TO_SYS, HMM_DMIRROR_MIGRATE_TO_SYS, d, r, p, n,
			  NULL, NULL);
	unsigned long i;

	hist_add(t, r, p, n, OP_TO_SYS, d, ret);
	if (r != R_SMALL)
		return;
	for (i = p; i < p + n; i++)
		if (pstate[idx(r, i)] == d)
			pstate[idx(r, i)] = ST_UNKNOWN;
	if (!ret)
		check_left_device(t, d, r, p, n);
}

static void op_exclusive(struct thr *t, int d, int r, unsigned long p, unsigned long n)
{
	unsigned long i;
	int ret;

	ret = dev_cmd(t, OP_EXCL, HMM_DMIRROR_EXCLUSIVE, d, r, p, n, t->buf, NULL);
	hist_add(t, r, p, n, OP_EXCL, d, ret);
	set_state(r, p, n, ST_UNKNOWN);
	if (!ret)
		compare(t, r, p, n, t->buf, NULL, OP_EXCL, d, &st->dev_bytes);
	if (pick(&t->rng, 2)) {
		ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_CHECK_EXCLUSIVE,
				 (uintptr_t)addr_of(r, p), NULL, n, NULL);
		count(OP_CHECK_EXCL, ret);
		if (ret == -EPERM)
			INC(st->excl_held, 1);
		else if (!ret)
			INC(st->excl_revoked, 1);
		else
			unexpected(t, OP_CHECK_EXCL, d, r, p, n, errname(-ret));
	}
	/* A CPU access revokes the device's exclusive access... */
	for (i = 0; i < n; i++)
		(void)__atomic_load_n(addr_of(r, p + i), __ATOMIC_RELAXED);
	compare(t, r, p, n, addr_of(r, p), NULL, OP_EXCL, -1, &st->cpu_bytes);
	cpu_touched(r, p, n, false);
	/* ...and the device must know. */
	ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_CHECK_EXCLUSIVE,
			 (uintptr_t)addr_of(r, p), NULL, n, NULL);
	count(OP_CHECK_EXCL, ret);
	if (ret)
		unexpected(t, OP_CHECK_EXCL, d, r, p, n, ret == -EPERM ?
			   "an exclusive entry survived a CPU access of its page" :
			   errname(-ret));
}

static void zeroed(struct thr *t, int op, int r, unsigned long p, unsigned long n)
{
	memset(model_of(r, p), 0, n * psz);
	set_state(r, p, n, ST_SYS);
	hist_add(t, r, p, n, op, -1, 0);
}

static void op_zap(struct thr *t, int r, unsigned long p, unsigned long n)
{
	int ret = madvise(addr_of(r, p), n * psz, MADV_DONTNEED) ? -errno : 0;

	count(OP_ZAP, ret);
	if (ret) {
		unexpected(t, OP_ZAP, -1, r, p, n, errname(-ret));
		return;
	}
	if (r == R_SHARED)	/* file pages keep their contents */
		hist_add(t, r, p, n, OP_ZAP, -1, 0);
	else
		zeroed(t, OP_ZAP, r, p, n);
}

static void op_punch(struct thr *t, int r, unsigned long p, unsigned long n)
{
	int ret = fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    p * psz, n * psz) ? -errno : 0;

	count(OP_PUNCH, ret);
	if (ret)
		unexpected(t, OP_PUNCH, -1, r, p, n, errname(-ret));
	else
		zeroed(t, OP_PUNCH, r, p, n);
}

static void op_remap(struct thr *t, int r, unsigned long p, unsigned long n)
{
	char *a = addr_of(r, p);
	void *m;
	int ret;

	if (r == R_SHARED)
		m = mmap(a, n * psz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 memfd, p * psz);
	else
		m = mmap(a, n * psz, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ret = m == MAP_FAILED ? -errno : 0;
	if (!ret && r != R_SHARED)
		ret = madvise(a, n * psz, r == R_SMALL ? MADV_NOHUGEPAGE :
			      MADV_HUGEPAGE) ? -errno : 0;
	count(OP_REMAP, ret);
	if (ret) {
		unexpected(t, OP_REMAP, -1, r, p, n, errname(-ret));
		return;
	}
	memset(pro + idx(r, p), 0, n);
	if (r == R_SHARED)
		hist_add(t, r, p, n, OP_REMAP, -1, 0);
	else
		zeroed(t, OP_REMAP, r, p, n);
}

static void op_mremap(struct thr *t, int r, unsigned long p, unsigned long n)
{
	char *a = addr_of(r, p);
	size_t len = n * psz;
	void *m;
	int ret = 0;

	m = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, t->scratch);
	if (m == MAP_FAILED) {
		ret = -errno;
	} else {
		m = mremap(t->scratch, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, a);
		if (m == MAP_FAILED) {
			ret = -errno;
			say("mremap back to %p failed: %s", a, strerror(-ret));
			exit(3);
		}
		m = mmap(t->scratch, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
			 MAP_FIXED | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			ret = -errno;
	}
	count(OP_MREMAP, ret);
	hist_add(t, r, p, n, OP_MREMAP, -1, ret);
	if (ret)
		unexpected(t, OP_MREMAP, -1, r, p, n, errname(-ret));
}

static void op_mprotect(struct thr *t, int r, unsigned long p, unsigned long n)
{
	bool ro = pick(&t->rng, 2);
	int ret = mprotect(addr_of(r, p), n * psz,
			   ro ? PROT_READ : PROT_READ | PROT_WRITE) ? -errno : 0;

	count(OP_MPROTECT, ret);
	hist_add(t, r, p, n, OP_MPROTECT, -1, ret);
	if (ret)
		unexpected(t, OP_MPROTECT, -1, r, p, n, errname(-ret));
	else
		memset(pro + idx(r, p), ro, n);
}

/*
 * The status bytes (@status, NULL: none) and counts of HMM_RS_MIGRATE @m
 * of @n pages, which succeeded, must agree: every byte a reason, ON_NODE
 * only with HMM_RS_REQ_NOT_ON_NODE, WHOLE only with HMM_RS_REQ_THP (or
 * ON_NODE: the filter keeps a huge page whole), the
 * counts those of the bytes and adding up to @n. Returns whether they do.
 */
static bool check_rs_status(struct thr *t, int op, int d, int r,
			    unsigned long p, unsigned long n,
			    const struct hmm_rs_migrate *m,
			    const unsigned char *status)
{
	uint64_t counts[HMM_RS_NR_REASONS] = { 0 }, sum = 0;
	const char *bad = NULL;
	char what[128];
	unsigned long i;
	int k;

	for (i = 0; status && i < n && !bad; i++) {
		k = status[i] & HMM_RS_STATUS_REASON;
		if (k > HMM_RS_ON_NODE)
			bad = "a status byte with no reason";
		else if (k == HMM_RS_ON_NODE && !(m->flags & HMM_RS_REQ_NOT_ON_NODE))
			bad = "ON_NODE without HMM_RS_REQ_NOT_ON_NODE";
		else if (status[i] & HMM_RS_STATUS_WHOLE &&
			 !(m->flags & HMM_RS_REQ_THP) && k != HMM_RS_ON_NODE)
			bad = "WHOLE without HMM_RS_REQ_THP (or ON_NODE)";
		else
			counts[k]++;
	}
	if (bad) {
		snprintf(what, sizeof(what), "page %lu: status %#x: %s",
			 p + i - 1, status[i - 1], bad);
		unexpected(t, op, d, r, p, n, what);
		return false;
	}
	for (k = 0; k < HMM_RS_NR_REASONS; k++) {
		sum += m->counts[k];
		if (status && m->counts[k] != counts[k])
			bad = "counts disagree with the status bytes";
	}
	if (!bad && m->counts[HMM_RS_ON_NODE] && !(m->flags & HMM_RS_REQ_NOT_ON_NODE))
		bad = "ON_NODE counted without HMM_RS_REQ_NOT_ON_NODE";
	if (!bad && (sum != n || m->migrated != m->counts[HMM_RS_MIGRATED]))
		bad = "counts do not add up";
	if (bad) {
		unexpected(t, op, d, r, p, n, bad);
		return false;
	}
	if (m->dst == HMM_RS_DST_NODE) {
		INC(st->node_calls, 1);
		INC(st->node_moved, m->migrated);
		INC(st->node_kept, m->counts[HMM_RS_ON_NODE]);
	}
	return true;
}

/*
 * A random HMM_RS_MIGRATE to a node (0 or 1) through device @d: any
 * selection, from @d or now and then another device of the case
 * (HMM_RS_REQ_SRC_DEV: device kinds only), maybe whole THPs (not with
 * SYSTEM and DEVICE_PRIVATE both), maybe faulted in first, maybe with the
 * node filter.
 */
static void rs_node_request(struct thr *t, int d, struct hmm_rs_migrate *m)
{
	int k = tc->devs[pick(&t->rng, tc->ndevs)];

	m->dst = HMM_RS_DST_NODE;
	m->node = pick(&t->rng, nnodes);
	m->select = pick(&t->rng, 2) ? HMM_RS_SELECT_ALL : 1 + pick(&t->rng, 7);
	if (k != d && !pick(&t->rng, 3)) {
		/* Another device's pages: device kinds only. */
		m->flags |= HMM_RS_REQ_SRC_DEV;
		m->src_dev = k;
		m->select &= ~HMM_RS_SELECT_SYSTEM;
		if (!m->select)
			m->select = HMM_RS_SELECT_DEVICE_PRIVATE;
	}
	/* Not with SYSTEM and DEVICE_PRIVATE both (EINVAL). */
	if (pick(&t->rng, 2) && !(m->select & HMM_RS_SELECT_SYSTEM &&
				  m->select & HMM_RS_SELECT_DEVICE_PRIVATE))
		m->flags |= HMM_RS_REQ_THP;
	if (m->select & HMM_RS_SELECT_SYSTEM) {
		if (pick(&t->rng, 2))
			m->flags |= HMM_RS_REQ_NOT_ON_NODE;
		if (!pick(&t->rng, 4))
			m->flags |= HMM_RS_REQ_FAULT;
	}
}

/*
 * The owner moves pages to a node (rs_node_request()). They keep their
 * contents (checked with the CPU now and then, at every checkpoint and at
 * the end); those MIGRATED or left ON_NODE are system pages now, the
 * others are where they were (unknown if faulted in first). In the small
 * region, while nothing but the owner moves its pages, move_pages(2)
 * must find every page MIGRATED or ON_NODE on the node, an ON_NODE page
 * there before too (unless faulted in), and no page that was on the node
 * MIGRATED despite the filter.
 */
static void op_to_node(struct thr *t, int d, int r, unsigned long p,
		       unsigned long n)
{
	struct hmm_rs_migrate m = { .status = (uintptr_t)t->perm };
	int before[SLOT_PAGES], after[SLOT_PAGES], k, ret, node;
	bool placed;
	unsigned long i;
	char what[160];

	rs_node_request(t, d, &m);
	if (m.flags & HMM_RS_REQ_THP)
		keep_thps_partial(r, p, &n);
	m.addr = (uintptr_t)addr_of(r, p);
	m.npages = n;
	node = m.node;
	placed = r == R_SMALL && n <= SLOT_PAGES &&
		 !hmm_rs_pages_nodes(addr_of(r, p), n, psz, before);
	ret = ioctl(fds[d], HMM_RS_MIGRATE, &m) ? -errno : 0;
	count(OP_TO_NODE, ret);
	hist_add(t, r, p, n, OP_TO_NODE, d, ret);
	if (!tolerated(OP_TO_NODE, ret, false))
		unexpected(t, OP_TO_NODE, d, r, p, n, errname(-ret));
	if (ret || !check_rs_status(t, OP_TO_NODE, d, r, p, n, &m, t->perm)) {
		set_state(r, p, n, ST_UNKNOWN);
		return;
	}
	for (i = 0; i < n; i++) {
		k = t->perm[i] & HMM_RS_STATUS_REASON;
		if (k == HMM_RS_MIGRATED || k == HMM_RS_ON_NODE)
			set_state(r, p + i, 1, ST_SYS);
		else if (m.flags & HMM_RS_REQ_FAULT)
			set_state(r, p + i, 1, ST_UNKNOWN);
	}
	if (placed && !hmm_rs_pages_nodes(addr_of(r, p), n, psz, after) &&
	    stable(t)) {
		INC(st->node_placed, n);
		for (i = 0; i < n; i++) {
			const char *bad = NULL;

			k = t->perm[i] & HMM_RS_STATUS_REASON;
			if (k == HMM_RS_MIGRATED && after[i] != node)
				bad = "MIGRATED, not on the node";
			else if (k == HMM_RS_ON_NODE && after[i] != node)
				bad = "ON_NODE, not on the node";
			else if (k == HMM_RS_ON_NODE && before[i] != node &&
				 !(m.flags & HMM_RS_REQ_FAULT && before[i] < 0))
				bad = "ON_NODE, but was not on the node";
			else if (k == HMM_RS_MIGRATED && before[i] == node &&
				 m.flags & HMM_RS_REQ_NOT_ON_NODE)
				bad = "MIGRATED despite HMM_RS_REQ_NOT_ON_NODE, was on the node";
			if (!bad)
				continue;
			INC(st->mismatches, 1);
			if (INC(st->details[2], 1) < MAX_DETAILS) {
				history(idx(r, p + i), what, sizeof(what));
				say("misplaced: process %d thread %d op %lu: dev %d, %s page %lu (select %#x flags %#x node %d): %s: node %d before, %d after; last ops:%s",
				    proc_id, t->id, t->opno, d, reg_names[r], p + i,
				    m.select, m.flags, node, bad, before[i],
				    after[i], what);
			}
		}
	}
	if (pick(&t->rng, 2)) {
		compare(t, r, p, n, addr_of(r, p), NULL, OP_TO_NODE, -1,
			&st->cpu_bytes);
		cpu_touched(r, p, n, false);
	}
}

/* The fork child: checks its parent thread's private pages, then scribbles. */
static void child_main(struct thr *t)
{
	unsigned long p, bad = 0;
	int r;

	for (r = R_SMALL; r <= R_HUGE; r++)
		for (p = 0; p < reg[r].pages; p++) {
			if (owner_of(r, p) != t->id)
				continue;
			bad += compare(t, r, p, 1, addr_of(r, p), NULL, OP_FORK, -1,
				       &st->fork_bytes);
			if (!pro[idx(r, p)] && !pick(&t->rng, 8))
				memset(addr_of(r, p) + pick(&t->rng, psz), 0xa5, 1);
		}
	_exit(bad ? 1 : 0);
}

static void reap_child(struct thr *t)
{
	int status;

	doing(t, -2, -1, 0, t->child, 0);
	if (waitpid(t->child, &status, 0) != t->child ||
	    !WIFEXITED(status) || WEXITSTATUS(status) > 1) {
		INC(st->unexpected, 1);
		say("fork child of process %d thread %d: status 0x%x", proc_id,
		    t->id, status);
	}
	t->child = 0;
	invalidate_states(t);
}

static void op_fork(struct thr *t)
{
	pid_t pid = fork();

	count(OP_FORK, pid < 0 ? -errno : 0);
	if (pid < 0) {
		unexpected(t, OP_FORK, -1, R_SMALL, 0, 1, strerror(errno));
		return;
	}
	if (!pid)
		child_main(t);
	INC(st->forks, 1);
	t->child = pid;
	t->child_ops = 4 + pick(&t->rng, 24);
	invalidate_states(t);
}

/* A random range of @t's pages in region @r: [*p, *p + *n). */
static void pick_range(struct thr *t, int r, unsigned long *p, unsigned long *n)
{
	unsigned long base, span, len;

	switch (r) {
	case R_SMALL:
		base = (t->id + cfg.threads * pick(&t->rng, SLOTS_PER_THREAD)) *
			SLOT_PAGES;
		span = SLOT_PAGES;
		break;
	case R_HUGE:
		base = t->id * HUGE_PAGES;
		span = HUGE_PAGES;
		break;
	default:
		base = shared_first + t->id * SHARED_PAGES;
		span = SHARED_PAGES;
		break;
	}
	/* The whole 2 MiB of a THP less often: under TCG it costs. */
	switch (pick(&t->rng, r == R_HUGE ? 20 : 10)) {
	case 0:
	case 1:
		len = 1;
		break;
	case 2:
	case 3:
	case 4:
		len = 1 + pick(&t->rng, 16);
		break;
	case 5:
	case 6:
		len = 1 + pick(&t->rng, span);
		break;
	case 7:
	case 8:
	case 9:
		len = span;
		break;
	default:
		len = 1 + pick(&t->rng, 64);
		break;
	}
	if (len > span)
		len = span;
	*p = base + pick(&t->rng, span - len + 1);
	*n = len;
}

static const unsigned char op_weights[] = {
	[OP_CPU_WRITE] = 14, [OP_CPU_READ] = 5, [OP_READ] = 12, [OP_WRITE] = 10,
	[OP_TO_DEV] = 16, [OP_TO_SYS] = 8, [OP_SNAPSHOT] = 8, [OP_EXCL] = 5,
	[OP_ZAP] = 4, [OP_PUNCH] = 1, [OP_REMAP] = 3, [OP_MREMAP] = 3,
	[OP_MPROTECT] = 4, [OP_TO_NODE] = 6, [OP_FORK] = 1,
};

static void do_op(struct thr *t)
{
	unsigned long p, n, w = 0, sum = 0;
	int r, op, d = tc->devs[pick(&t->rng, tc->ndevs)];
	double t0;

	for (op = 0; op <= OP_FORK; op++)
		sum += op == OP_FORK ? cfg.forks * tc->fork_weight : op_weights[op];
	w = pick(&t->rng, sum);
	for (op = 0; op < OP_FORK; op++) {
		if (w < op_weights[op])
			break;
		w -= op_weights[op];
	}
	w = pick(&t->rng, 100);
	r = w < 45 ? R_SMALL : w < 85 ? R_HUGE : R_SHARED;
	pick_range(t, r, &p, &n);
	t->opno++;
	t->last_op = op;
	t0 = now();
	doing(t, op, d, r, p, n);
	op_begin(t, r, p);
	if ((op == OP_CPU_WRITE || op == OP_EXCL) && any_ro(r, p, n))
		op = OP_CPU_READ;
	if (op == OP_EXCL && r == R_SHARED)	/* anonymous memory only */
		op = OP_READ;
	if (op == OP_PUNCH && r != R_SHARED)
		op = OP_ZAP;
	if (op == OP_FORK && t->child)
		op = OP_SNAPSHOT;
	if (op == OP_TO_NODE && !rs_migrate)
		op = OP_TO_SYS;
	switch (op) {
	case OP_CPU_WRITE:
		op_cpu_write(t, r, p, n);
		break;
	case OP_CPU_READ:
		op_cpu_read(t, r, p, n);
		break;
	case OP_READ:
		op_read(t, d, r, p, n);
		break;
	case OP_WRITE:
		op_write(t, d, r, p, n);
		break;
	case OP_TO_DEV:
		op_to_dev(t, d, r, p, n);
		break;
	case OP_TO_SYS:
		op_to_sys(t, d, r, p, n);
		break;
	case OP_SNAPSHOT:
		snapshot_op(t, OP_SNAPSHOT, d, r, p, n);
		break;
	case OP_EXCL:
		op_exclusive(t, d, r, p, n);
		break;
	case OP_ZAP:
		op_zap(t, r, p, n);
		break;
	case OP_PUNCH:
		op_punch(t, r, p, n);
		break;
	case OP_REMAP:
		op_remap(t, r, p, n);
		break;
	case OP_MREMAP:
		op_mremap(t, r, p, n);
		break;
	case OP_MPROTECT:
		op_mprotect(t, r, p, n);
		break;
	case OP_TO_NODE:
		op_to_node(t, d, r, p, n);
		break;
	default:
		op_fork(t);
		break;
	}
	/* Where did that leave the pages? A look through a random device. */
	if (r == R_SMALL && op != OP_SNAPSHOT && op != OP_TO_DEV &&
	    op != OP_FORK && !pick(&t->rng, 3))
		snapshot_op(t, OP_SNAPSHOT, tc->devs[pick(&t->rng, tc->ndevs)], r,
			    p, n);
	op_end(t);
	INC(st->us[op], (unsigned long)((now() - t0) * 1e6));
	if (t->child && --t->child_ops <= 0)
		reap_child(t);
}

/* The range of this process's own pages in region @r. */
static void own_range(int r, unsigned long *p, unsigned long *n)
{
	*p = r == R_SHARED ? shared_first : 0;
	*n = r == R_SHARED ? (unsigned long)cfg.threads * SHARED_PAGES : reg[r].pages;
}

/* Every byte of the process's pages, through device @d and the CPU. */
static void verify_all(struct thr *t, int d)
{
	unsigned long p, n;
	int r, ret;

	for (r = 0; r < NREG; r++) {
		own_range(r, &p, &n);
		doing(t, OP_K_READ, d, r, p, n);
		ret = dev_cmd(t, OP_K_READ, HMM_DMIRROR_READ, d, r, p, n, chk, NULL);
		if (!ret)
			compare(t, r, p, n, chk, NULL, OP_K_READ, d, &st->dev_bytes);
		compare(t, r, p, n, addr_of(r, p), NULL, OP_K_READ, -1, &st->cpu_bytes);
	}
}

/* Migrates the private regions to device @d (all back if @d < 0). */
static void migrate_all(struct thr *t, int d)
{
	unsigned long p, n;
	int r, i, ret;

	for (r = R_SMALL; r <= R_HUGE; r++) {
		own_range(r, &p, &n);
		doing(t, d >= 0 ? OP_K_TO_DEV : OP_K_TO_SYS, d, r, p, n);
		if (d >= 0) {
			ret = dev_cmd(t, OP_K_TO_DEV, HMM_DMIRROR_MIGRATE_TO_DEV, d,
				      r, p, n, chk, NULL);
			hist_add(t, r, p, n, OP_K_TO_DEV, d, ret);
			if (!ret)
				compare(t, r, p, n, chk, NULL, OP_K_TO_DEV, d,
					&st->dev_bytes);
			continue;
		}
		for (i = 0; i < tc->ndevs; i++) {
			ret = dev_cmd(t, OP_K_TO_SYS, HMM_DMIRROR_MIGRATE_TO_SYS,
				      tc->devs[i], r, p, n, NULL, NULL);
			hist_add(t, r, p, n, OP_K_TO_SYS, tc->devs[i], ret);
		}
	}
}

/* At the end: no page of the process may be left on any device. */
static void check_all_back(struct thr *t)
{
	unsigned long p, n, i, left;
	int r, j, d, tries, ret;

	for (r = R_SMALL; r <= R_HUGE; r++) {
		own_range(r, &p, &n);
		for (j = 0; j < tc->ndevs; j++) {
			d = tc->devs[j];
			for (tries = 0; tries < 4; tries++) {
				ret = dev_cmd(t, OP_K_SNAPSHOT, HMM_DMIRROR_SNAPSHOT, d,
					      r, p, n, chk, NULL);
				if (ret)
					break;
				for (i = left = 0; i < n; i++) {
					int c = classify(chk[i], d, false, false);

					left += c == C_LOCAL || c == C_COH_REMOTE;
					if (c == C_INVALID)
						unexpected(t, OP_K_SNAPSHOT, d, r, p + i, 1,
							   "invalid snapshot byte");
				}
				if (!left)
					break;
				usleep(10000);
				migrate_all(t, -1);
			}
			if (!ret && left) {
				INC(st->mismatches, 1);
				say("stuck: process %d: %lu %s pages still on a device (snapshot through dev %d) at the end",
				    proc_id, left, reg_names[r], d);
			}
		}
	}
}

/*
 * Moves the private regions to a node, everything from wherever it is:
 * an HMM_RS_MIGRATE through each device of the case, all selected (so
 * THPs split: REQ_THP with SYSTEM and DEVICE_PRIVATE is EINVAL), the node
 * filter from the second on. The CPU then finds every byte as the model has it.
 */
static void migrate_all_to_node(struct thr *t)
{
	struct hmm_rs_migrate m;
	int r, i, d, ret, node = pick(&t->rng, nnodes);
	unsigned long p, n;

	for (r = R_SMALL; r <= R_HUGE; r++) {
		own_range(r, &p, &n);
		for (i = 0; i < tc->ndevs; i++) {
			d = tc->devs[i];
			doing(t, OP_K_TO_NODE, d, r, p, n);
			m = (struct hmm_rs_migrate){
				.addr = (uintptr_t)addr_of(r, p),
				.npages = n,
				.select = HMM_RS_SELECT_ALL,
				.dst = HMM_RS_DST_NODE,
				/*
				 * No REQ_THP: with SYSTEM and DEVICE_PRIVATE
				 * both it is EINVAL (the device-private pages
				 * would split the system THPs on 7.3).
				 */
				.flags = i ? HMM_RS_REQ_NOT_ON_NODE : 0,
				.node = node,
			};
			ret = ioctl(fds[d], HMM_RS_MIGRATE, &m) ? -errno : 0;
			count(OP_K_TO_NODE, ret);
			hist_add(t, r, p, n, OP_K_TO_NODE, d, ret);
			if (!tolerated(OP_K_TO_NODE, ret, false))
				unexpected(t, OP_K_TO_NODE, d, r, p, n, errname(-ret));
			else if (!ret)
				check_rs_status(t, OP_K_TO_NODE, d, r, p, n, &m, NULL);
		}
		compare(t, r, p, n, addr_of(r, p), NULL, OP_K_TO_NODE, -1,
			&st->cpu_bytes);
	}
}

static void checkpoint(struct thr *t)
{
	int d = tc->devs[pick(&t->rng, tc->ndevs)];
	unsigned long w = pick(&t->rng, 10);
	double t0 = now();

	INC(pseq, 1);
	verify_all(t, d);
	/*
	 * All back; then maybe all to one device (the data it returns
	 * checked); or all to a node.
	 */
	if (w < 7)
		migrate_all(t, -1);
	if (w < 4)
		migrate_all(t, tc->devs[pick(&t->rng, tc->ndevs)]);
	if (w == 7 && rs_migrate)
		migrate_all_to_node(t);
	INC(pseq, 1);
	INC(st->rounds, 1);
	INC(st->ckpts, 1);
	INC(st->ckpt_us, (unsigned long)((now() - t0) * 1e6));
}

static void *owner_main(void *arg)
{
	struct thr *t = arg;
	unsigned long round = 0;
	double t0;
	int i;

	for (;;) {
		for (i = 0; i < cfg.ops && now() < ops_end && !LOAD(st->abort); i++)
			do_op(t);
		if (t->child)
			reap_child(t);
		doing(t, -1, -1, 0, 0, 0);
		t0 = now();
		pthread_barrier_wait(&round_barrier);
		INC(st->barrier_us, (unsigned long)((now() - t0) * 1e6));
		round++;
		/* The last round's checks are the end's (worker_main()). */
		if (!t->id) {
			if (now() >= ops_end || LOAD(st->abort) ||
			    (cfg.rounds && round >= cfg.rounds))
				STORE(stop_threads, 1);
			else
				checkpoint(t);
		}
		pthread_barrier_wait(&round_barrier);
		if (LOAD(stop_threads))
			break;
	}
	return NULL;
}

/* Makes the small slots of pages [@p, @p + @n) odd, or even again. */
static void bump_slots(unsigned long p, unsigned long n)
{
	unsigned long slot;

	for (slot = p / SLOT_PAGES; slot <= (p + n - 1) / SLOT_PAGES; slot++)
		INC(slot_seq[slot], 1);
}

/*
 * Whether /dev/hmm_dmirror0 takes HMM_RS_MIGRATE: one page to the device
 * (the C test_hmm has no such ioctl: EINVAL).
 */
static bool probe_rs_migrate(void)
{
	struct hmm_rs_migrate m = {
		.npages = 1,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
	};
	int fd = open("/dev/hmm_dmirror0", O_RDWR);
	char *page = mmap(NULL, psz, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool ok = false;

	if (fd >= 0 && page != MAP_FAILED) {
		page[0] = 1;
		m.addr = (uintptr_t)page;
		ok = !ioctl(fd, HMM_RS_MIGRATE, &m) && m.migrated == 1;
	}
	if (page != MAP_FAILED)
		munmap(page, psz);
	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * HMM_RS_MIGRATE of @n pages from @p through device @d, in a random
 * direction (to @d, back from it, to @d from another device of the case,
 * or to a node, rs_node_request()) with random requests; every status
 * byte and the counts must be consistent (check_rs_status()). Where the
 * pages end up is not checked here (their owners move them meanwhile),
 * only that they keep their contents (checkpoints, the end). Returns 0 or
 * -errno.
 */
static int chaos_rs_migrate(struct thr *t, int d, int r, unsigned long p,
			    unsigned long n)
{
	struct hmm_rs_migrate m = {
		.addr = (uintptr_t)addr_of(r, p),
		.npages = n,
		.status = (uintptr_t)t->perm,
	};
	int k;

	m.flags = pick(&t->rng, 2) ? HMM_RS_REQ_THP : 0;
	switch (pick(&t->rng, 4)) {
	case 0:
		m.select = HMM_RS_SELECT_SYSTEM;
		m.dst = HMM_RS_DST_DEVICE;
		m.flags |= pick(&t->rng, 2) ? HMM_RS_REQ_FAULT : 0;
		avoid_thp_split_bug(d, r, p, &n);
		m.npages = n;
		break;
	case 1:
		m.select = HMM_RS_SELECT_DEVICE_PRIVATE |
			   HMM_RS_SELECT_DEVICE_COHERENT;
		m.dst = HMM_RS_DST_SYSTEM;
		break;
	case 2:
		k = tc->devs[pick(&t->rng, tc->ndevs)];
		if (k == d)
			return 0;
		m.select = coherent(k) ? HMM_RS_SELECT_DEVICE_COHERENT :
					 HMM_RS_SELECT_DEVICE_PRIVATE;
		m.dst = HMM_RS_DST_DEVICE;
		m.flags |= HMM_RS_REQ_SRC_DEV;
		m.src_dev = k;
		avoid_thp_split_bug(d, r, p, &n);
		m.npages = n;
		break;
	default:
		rs_node_request(t, d, &m);
		if (m.flags & HMM_RS_REQ_THP)
			keep_thps_partial(r, p, &n);
		m.npages = n;
		break;
	}
	if (ioctl(fds[d], HMM_RS_MIGRATE, &m))
		return -errno;
	check_rs_status(t, OP_C_RS_MIGRATE, d, r, p, n, &m, t->perm);
	return 0;
}

/* Chaos: moves and reads pages it does not own; must change no byte. */
static void *chaos_main(void *arg)
{
	struct thr *t = arg;
	static double last_compact;

	while (!LOAD(stop_chaos)) {
		int d = tc->devs[pick(&t->rng, tc->ndevs)], w = pick(&t->rng, 20);
		int r = pick(&t->rng, 3) ? R_HUGE : R_SHARED, op, ret = 0;
		unsigned long p, n;
		bool small = false;

		doing(t, -1, -1, 0, 0, 0);
		usleep(200 + pick(&t->rng, 2000));
		if (r == R_HUGE && !pick(&t->rng, 6)) {
			r = R_SMALL;	/* moves owners' pages: bump slot_seq */
			small = true;
		}
		p = pick(&t->rng, reg[r].pages);
		n = 1 + pick(&t->rng, reg[r].pages - p);
		if (n > (small ? 2 * SLOT_PAGES : MAX_OP_PAGES))
			n = small ? 2 * SLOT_PAGES : MAX_OP_PAGES;
		if (w < 3 && rs_migrate)
			op = OP_C_RS_MIGRATE;
		else if (w < 6)
			op = OP_C_TO_DEV;
		else if (w < 10)
			op = OP_C_TO_SYS;
		else if (w < 13 && !small)
			op = OP_C_READ;
		else if (w < 17)
			op = OP_C_SNAPSHOT;
		else if (r == R_HUGE && w < 19)
			op = OP_C_MADV;
		else if (r == R_HUGE)
			op = OP_C_COLLAPSE;
		else if (!proc_id && now() - last_compact > 3)
			op = OP_C_COMPACT;
		else
			continue;
		if (op == OP_C_TO_DEV)
			avoid_thp_split_bug(d, r, p, &n);
		if (op == OP_C_COLLAPSE) {
			p -= p % HUGE_PAGES;
			n = HUGE_PAGES;
		}
		doing(t, op, d, r, p, n);
		if (small)
			bump_slots(p, n);
		switch (op) {
		case OP_C_TO_DEV:
			ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_MIGRATE_TO_DEV,
					 (uintptr_t)addr_of(r, p), t->buf, n, NULL);
			break;
		case OP_C_TO_SYS:
			ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_MIGRATE_TO_SYS,
					 (uintptr_t)addr_of(r, p), NULL, n, NULL);
			break;
		case OP_C_RS_MIGRATE:
			ret = chaos_rs_migrate(t, d, r, p, n);
			break;
		case OP_C_READ:
			ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_READ,
					 (uintptr_t)addr_of(r, p), t->buf, n, NULL);
			break;
		case OP_C_SNAPSHOT:
			ret = hmm_rs_cmd(fds[d], HMM_DMIRROR_SNAPSHOT,
					 (uintptr_t)addr_of(r, p), t->perm, n, NULL);
			if (!ret)
				check_snapshot(t, r, p, n, d, t->perm, false, false,
					       OP_C_SNAPSHOT);
			break;
		case OP_C_MADV:
			ret = madvise(addr_of(r, p), n * psz,
				      pick(&t->rng, 2) ? MADV_COLD : MADV_PAGEOUT);
			ret = ret ? -errno : 0;
			break;
		case OP_C_COLLAPSE:
			/* It may fail on pages on a device: whatever it says. */
			madvise(addr_of(r, p), n * psz, MADV_COLLAPSE);
			break;
		default: {
			int fd = open("/proc/sys/vm/compact_memory", O_WRONLY);

			last_compact = now();
			if (fd >= 0) {
				if (write(fd, "1", 1) < 0)
					ret = -errno;
				close(fd);
			}
			break;
		}
		}
		if (small)
			bump_slots(p, n);
		count(op, ret);
		/*
		 * Owners remap and mremap their ranges meanwhile: a hole makes
		 * EINVAL or EFAULT; MIGRATE_TO_DEV returns ENOENT for pages not
		 * in the device page table.
		 */
		if (ret && ret != -EBUSY && ret != -ENOMEM && ret != -ENOENT &&
		    ret != -EINVAL && ret != -EFAULT)
			unexpected(t, op, d, r, p, n, errname(-ret));
	}
	doing(t, -1, -1, 0, 0, 0);
	return NULL;
}

/* Waits until every worker got here (false: the time is up first). */
static bool global_barrier(int k)
{
	double limit = deadline + GRACE_SECS / 2;

	INC(st->arrive[k], 1);
	while (LOAD(st->arrive[k]) < (unsigned long)cfg.procs) {
		if (now() > limit)
			return false;
		usleep(2000);
	}
	return true;
}

static void *map_or_die(void *addr, size_t len, int prot, int flags, int fd)
{
	void *m = mmap(addr, len, prot, flags, fd, 0);

	if (m == MAP_FAILED) {
		say("process %d: mmap of %zu bytes: %s", proc_id, len, strerror(errno));
		exit(2);
	}
	return m;
}

static void setup_worker(void)
{
	unsigned long huge = (unsigned long)cfg.threads * HUGE_PAGES * psz, p, n;
	unsigned long shared_pages = (unsigned long)cfg.procs * cfg.threads *
				     SHARED_PAGES;
	uint64_t rng = splitmix(cfg.seed ^ ((uint64_t)proc_id << 32) ^ 0x5eed);
	char *h, path[32];
	int i, r;

	for (i = 0; i < tc->ndevs; i++) {
		snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", tc->devs[i]);
		fds[tc->devs[i]] = open(path, O_RDWR);
		if (fds[tc->devs[i]] < 0) {
			say("process %d: open %s: %s", proc_id, path, strerror(errno));
			exit(2);
		}
	}
	reg[R_SMALL].pages = (unsigned long)cfg.threads * SLOTS_PER_THREAD * SLOT_PAGES;
	reg[R_SMALL].base = map_or_die(NULL, reg[R_SMALL].pages * psz,
				       PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1);
	madvise(reg[R_SMALL].base, reg[R_SMALL].pages * psz, MADV_NOHUGEPAGE);
	h = map_or_die(NULL, huge + (2UL << 20), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1);
	reg[R_HUGE].base = (char *)(((uintptr_t)h + (2UL << 20) - 1) &
				    ~((2UL << 20) - 1));
	reg[R_HUGE].pages = huge / psz;
	madvise(reg[R_HUGE].base, huge, MADV_HUGEPAGE);
	reg[R_SHARED].pages = shared_pages;
	reg[R_SHARED].base = map_or_die(NULL, shared_pages * psz,
					PROT_READ | PROT_WRITE, MAP_SHARED, memfd);
	shared_first = (unsigned long)proc_id * cfg.threads * SHARED_PAGES;
	for (r = 0; r < NREG; r++) {
		reg[r].first = total_pages;
		total_pages += reg[r].pages;
	}
	model = map_or_die(NULL, total_pages * psz, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1);
	chk = map_or_die(NULL, (huge > shared_pages * psz ? huge : shared_pages * psz),
			 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	slot_seq = map_or_die(NULL, reg[R_SMALL].pages / SLOT_PAGES *
			      sizeof(*slot_seq), PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1);
	pstate = map_or_die(NULL, total_pages, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1);
	memset(pstate, ST_UNKNOWN, total_pages);
	pro = map_or_die(NULL, total_pages, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1);
	hist = map_or_die(NULL, total_pages * sizeof(*hist), PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1);
	hidx = map_or_die(NULL, total_pages, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (i = 0; i <= cfg.threads; i++) {
		struct thr *t = &thr[i];

		t->id = i;
		t->rng = splitmix(cfg.seed ^ ((uint64_t)proc_id << 32) ^
				  ((uint64_t)i << 16) ^ (uintptr_t)tc->name[0]);
		t->buf = map_or_die(NULL, MAX_OP_PAGES * psz, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1);
		t->perm = map_or_die(NULL, MAX_OP_PAGES, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1);
		t->scratch = map_or_die(NULL, MAX_OP_PAGES * psz, PROT_NONE,
					MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	}
	/* Initial contents: most pages random, some never touched. */
	for (r = 0; r < NREG; r++) {
		own_range(r, &p, &n);
		for (; n; p++, n--) {
			if (r == R_SMALL && !pick(&rng, 4))
				continue;
			fill_random(&rng, model_of(r, p), psz);
			memcpy(addr_of(r, p), model_of(r, p), psz);
			hist_add(NULL, r, p, 1, OP_INIT, -1, 0);
		}
	}
}

static void max_ms(unsigned long *x, double secs)
{
	unsigned long v = secs > 0 ? secs * 1000 : 0, old = LOAD(*x);

	while (old < v && !__atomic_compare_exchange_n(x, &old, v, false,
						       __ATOMIC_RELAXED,
						       __ATOMIC_RELAXED))
		;
}

static int worker_main(void)
{
	pthread_t chaos;
	unsigned long p, n;
	double t0;
	int i, d;

	setup_worker();
	pthread_barrier_init(&round_barrier, NULL, cfg.threads);
	for (i = 0; i < cfg.threads; i++)
		if (pthread_create(&thr[i].th, NULL, owner_main, &thr[i])) {
			say("process %d: pthread_create failed", proc_id);
			exit(2);
		}
	if (cfg.chaos && pthread_create(&chaos, NULL, chaos_main, &thr[cfg.threads])) {
		say("process %d: pthread_create failed", proc_id);
		exit(2);
	}
	for (i = 0; i < cfg.threads; i++)
		pthread_join(thr[i].th, NULL);
	STORE(stop_chaos, 1);
	if (cfg.chaos)
		pthread_join(chaos, NULL);

	/* The end: everything back, checked; then every slice of the memfd. */
	t0 = now();
	max_ms(&st->late_ms, t0 - ops_end);
	doing(&thr[0], OP_K_TO_SYS, -1, 0, 0, 0);
	migrate_all(&thr[0], -1);
	check_all_back(&thr[0]);
	d = tc->devs[pick(&thr[0].rng, tc->ndevs)];
	verify_all(&thr[0], d);
	INC(st->rounds, 1);
	own_range(R_SHARED, &p, &n);
	memcpy(expect + p * psz, model_of(R_SHARED, p), n * psz);
	doing(&thr[0], -1, -1, 0, 0, 0);
	if (!global_barrier(0)) {
		say("process %d: not all workers reached the end: the shared memfd is not checked",
		    proc_id);
		return 1;
	}
	n = reg[R_SHARED].pages;
	doing(&thr[0], OP_K_READ, d, R_SHARED, 0, n);
	if (!dev_cmd(&thr[0], OP_K_READ, HMM_DMIRROR_READ, d, R_SHARED, 0, n, chk, NULL))
		compare(&thr[0], R_SHARED, 0, n, chk, expect, OP_K_READ, d,
			&st->dev_bytes);
	compare(&thr[0], R_SHARED, 0, n, addr_of(R_SHARED, 0), expect, OP_K_READ,
		-1, &st->cpu_bytes);
	max_ms(&st->final_ms, now() - t0);
	doing(&thr[0], -1, -1, 0, 0, 0);
	/* Close the files only once nobody has pages on a device. */
	global_barrier(1);
	for (i = 0; i < NDEV; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return 0;
}

static void print_stats(void)
{
	int op, e;

	unsigned long ops = 0;

	for (op = 0; op < NOPS; op++)
		ops += st->ops[op];
	say("%lu rounds (%lu checkpoints, %d ends), %lu operations; bytes checked: %lu by the CPU, %lu from the devices, %lu in %lu fork children",
	    st->rounds, st->ckpts, cfg.procs, ops, st->cpu_bytes, st->dev_bytes, st->fork_bytes,
	    st->forks);
	say("snapshot pages %lu (%lu checked against the owner's state); exclusive entries held %lu, already revoked %lu at CHECK_EXCLUSIVE",
	    st->snap_pages, st->snap_asserted, st->excl_held, st->excl_revoked);
	for (op = 0; op < NOPS; op++) {
		char line[512];
		int n = 0;

		for (e = 0; e <= MAX_ERRNO; e++)
			if (st->err[op][e] && n < (int)sizeof(line))
				n += snprintf(line + n, sizeof(line) - n, " %s=%lu",
					      e ? errname(e) : "ok", st->err[op][e]);
		if (n && st->us[op])
			say("  %-16s%s (%.1f ms each)", op_names[op], line,
			    st->us[op] / 1000.0 / st->ops[op]);
		else if (n)
			say("  %-16s%s", op_names[op], line);
	}
	say("time: checkpoints %.1f s each, %.1f s waited at round barriers per round; the last round ended %.1f s after the operations' share of the budget, the final checks took %.1f s",
	    st->ckpts ? st->ckpt_us / 1e6 / st->ckpts : 0,
	    st->rounds ? st->barrier_us / 1e6 / st->rounds : 0,
	    st->late_ms / 1000.0, st->final_ms / 1000.0);
	if (rs_migrate)
		say("HMM_RS_MIGRATE to a node: %lu calls succeeded, %lu pages moved, %lu left ON_NODE, %lu placements checked with move_pages(2)",
		    st->node_calls, st->node_moved, st->node_kept, st->node_placed);
	say("corruptions: %lu bytes in %lu pages; snapshot/state disagreements %lu; unexpected errors %lu",
	    st->corrupt_bytes, st->corrupt_pages, st->mismatches, st->unexpected);
}

/* Prints each line of file @path, after @tag. */
static void dump_file(const char *path, const char *tag)
{
	char buf[4096], *line, *save;
	int fd = open(path, O_RDONLY), n;

	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		say("%s %s", tag, line);
}

/* The kernel's view of every task of process @pid. */
static void dump_tasks(pid_t pid)
{
	char path[320], tag[300];
	struct dirent *e;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(tag, sizeof(tag), "  task %s:", e->d_name);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", pid, e->d_name);
		dump_file(path, tag);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stack", pid, e->d_name);
		dump_file(path, tag);
	}
	closedir(dir);
}

/* A worker with a thread in one operation for over cfg.stuck s, or -1. */
static int find_stuck(bool *done)
{
	int i, j;

	for (i = 0; i < cfg.procs; i++)
		for (j = 0; j < cfg.threads + cfg.chaos && !done[i]; j++) {
			struct cur *c = &st->cur[i][j];

			if (c->since && c->op != -1 && now() - c->since > cfg.stuck)
				return i;
		}
	return -1;
}

/* Workers past their time: what each thread was doing, and its stack. */
static void dump_stuck(pid_t *pids, bool *done)
{
	char path[64], buf[512], *rp;
	struct dirent *e;
	int i, j, fd, n;
	DIR *dir;

	for (i = 0; i < cfg.procs; i++) {
		if (done[i])
			continue;
		for (j = 0; j < cfg.threads + cfg.chaos; j++) {
			struct cur *c = &st->cur[i][j];

			say("worker %d (pid %d) thread %d: %s dev %d %s pages %lu-%lu, op %lu, for %.1f s",
			    i, pids[i], j, c->op == -1 ? "waiting" :
			    c->op == -2 ? "reaping its fork child" : op_names[c->op],
			    c->dev, reg_names[c->r], c->p, c->p + c->n - 1, c->opno,
			    now() - c->since);
		}
		dump_tasks(pids[i]);
	}
	/* And the workers' fork children. */
	dir = opendir("/proc");
	while (dir && (e = readdir(dir))) {
		pid_t pid = atoi(e->d_name), ppid;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		rp = strrchr(buf, ')');
		if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1)
			continue;
		for (i = 0; i < cfg.procs; i++)
			if (!done[i] && ppid == pids[i]) {
				say("fork child %d of worker %d:", pid, i);
				dump_tasks(pid);
			}
	}
	if (dir)
		closedir(dir);
}

static bool run_case(const struct tcase *c)
{
	size_t shared = (size_t)cfg.procs * cfg.threads * SHARED_PAGES * psz;
	char devs[2 * NDEV + 1] = "";
	bool done[MAX_PROCS] = { false };
	pid_t pids[MAX_PROCS];
	int i, status, left, bad = 0;
	double hard, give_up = 0;

	tc = c;
	st = map_or_die(NULL, sizeof(*st), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1);
	expect = map_or_die(NULL, shared, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1);
	memfd = memfd_create("hmm-rs-stress", 0);
	if (memfd < 0 || ftruncate(memfd, shared))
		ksft_exit_fail_msg("memfd: %s\n", strerror(errno));
	ops_end = now() + cfg.secs * OPS_SHARE;
	deadline = ops_end + cfg.secs * (1 - OPS_SHARE);
	hard = deadline + GRACE_SECS;
	for (i = 0; i < c->ndevs; i++) {
		devs[2 * i] = ' ';
		devs[2 * i + 1] = '0' + c->devs[i];
	}
	say("case %s: %d processes x %d threads%s, devices%s, %.0f s",
	    c->name, cfg.procs, cfg.threads, cfg.chaos ? " + chaos" : "", devs,
	    cfg.secs);
	fflush(stdout);
	for (i = 0; i < cfg.procs; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			ksft_exit_fail_msg("fork: %s\n", strerror(errno));
		if (!pids[i]) {
			proc_id = i;
			_exit(worker_main());
		}
	}
	for (left = cfg.procs; left; ) {
		pid_t pid = waitpid(-1, &status, WNOHANG);
		int k;

		if (pid > 0) {
			left--;
			for (i = 0; i < cfg.procs && pids[i] != pid; i++)
				;
			done[i] = true;
			if (!WIFEXITED(status) || WEXITSTATUS(status)) {
				bad++;
				say("worker %d: %s %d", i, WIFEXITED(status) ?
				    "exit status" : "killed by signal",
				    WIFEXITED(status) ? WEXITSTATUS(status) :
				    WTERMSIG(status));
			}
			continue;
		}
		k = give_up ? -1 : find_stuck(done);
		if (!give_up && (now() > hard || k >= 0)) {
			if (k >= 0)
				say("worker %d: a thread has been in one operation for over %.0f s: killing the workers",
				    k, cfg.stuck);
			else
				say("workers still running %d s past the budget: killing them",
				    GRACE_SECS);
			dump_stuck(pids, done);
			for (i = 0; i < cfg.procs; i++)
				kill(pids[i], SIGKILL);
			bad++;
			give_up = now() + 10;
		}
		if (give_up && now() > give_up) {
			say("%d worker(s) do not die (stuck in the kernel): leaving them",
			    left);
			break;
		}
		usleep(20000);
	}
	close(memfd);
	say("case %s took %.1f s", c->name, now() - deadline + cfg.secs);
	print_stats();
	bad += st->corrupt_pages || st->mismatches || st->unexpected;
	munmap(expect, shared);
	munmap(st, sizeof(*st));
	return !bad;
}

int main(void)
{
	static const struct tcase cases[] = {
		{ "private", { 0, 1 }, 2, 1 },
		{ "coherent", { 2, 3 }, 2, 1 },
		{ "mixed", { 0, 1, 2, 3 }, 4, 2 },
	};
	const char *sel = getenv("HMM_RS_STRESS_CASES");
	const char *seed_env = getenv("HMM_RS_STRESS_SEED");
	bool has_coherent = !access("/dev/hmm_dmirror2", F_OK) &&
			    !access("/dev/hmm_dmirror3", F_OK);
	const struct tcase *run[8];
	int i, k, ncases = 0;
	char replay[600], list[64], *tok, *save;
	double total;
	bool debug;

	psz = sysconf(_SC_PAGESIZE);
	cfg.seed = seed_env ? strtoull(seed_env, NULL, 0) :
		(uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
	/* A debug kernel is 5-10 times slower: less memory to check. */
	debug = env_num("HMM_RS_DEBUG", 0) == 1;
	total = env_num("HMM_RS_STRESS_SECS", 60);
	cfg.procs = env_num("HMM_RS_STRESS_PROCS", debug ? 2 : 3);
	cfg.threads = env_num("HMM_RS_STRESS_THREADS", debug ? 2 : 3);
	cfg.ops = env_num("HMM_RS_STRESS_OPS", 32);
	cfg.rounds = env_num("HMM_RS_STRESS_ROUNDS", 0);
	cfg.chaos = env_num("HMM_RS_STRESS_CHAOS", 1) != 0;
	cfg.forks = env_num("HMM_RS_STRESS_FORKS", 1) != 0;
	cfg.kernel_bugs = env_num("HMM_RS_KERNEL_BUGS", 0) != 0;
	cfg.stuck = env_num("HMM_RS_STRESS_STUCK_SECS", debug ? 180 : 60);
	rs_migrate = probe_rs_migrate();
	hmm_rs_memory_nodes(list, sizeof(list));
	if (hmm_rs_node_in(list, 1))
		nnodes = 2;
	if (cfg.procs < 1 || cfg.procs > MAX_PROCS)
		cfg.procs = 3;
	if (cfg.threads < 1 || cfg.threads >= MAX_THREADS)
		cfg.threads = 3;
	if (cfg.ops < 1)
		cfg.ops = 32;
	/* The cases HMM_RS_STRESS_CASES names, in its order; else all three. */
	snprintf(list, sizeof(list), "%s", sel ? sel : "private,coherent,mixed");
	for (tok = strtok_r(list, ", ", &save); tok && ncases < 8;
	     tok = strtok_r(NULL, ", ", &save)) {
		for (k = 0; k < 3 && strcmp(tok, cases[k].name); k++)
			;
		if (k == 3)
			ksft_exit_fail_msg("HMM_RS_STRESS_CASES: no case '%s' (private, coherent, mixed)\n",
					   tok);
		run[ncases++] = &cases[k];
	}
	cfg.secs = ncases ? total / ncases : total;

	snprintf(replay, sizeof(replay),
		 "HMM_RS_STRESS_SEED=%llu HMM_RS_STRESS_SECS=%g HMM_RS_STRESS_PROCS=%d HMM_RS_STRESS_THREADS=%d HMM_RS_STRESS_OPS=%d HMM_RS_STRESS_ROUNDS=%lu HMM_RS_STRESS_CHAOS=%d HMM_RS_STRESS_FORKS=%d HMM_RS_KERNEL_BUGS=%d%s%s%s /tests/hmm_rs_stress",
		 (unsigned long long)cfg.seed, total, cfg.procs, cfg.threads,
		 cfg.ops, cfg.rounds, cfg.chaos, cfg.forks, cfg.kernel_bugs,
		 sel ? " HMM_RS_STRESS_CASES='" : "", sel ? sel : "", sel ? "'" : "");
	ksft_print_header();
	ksft_set_plan(ncases);
	ksft_print_msg("seed %llu; replay: %s\n", (unsigned long long)cfg.seed, replay);
	if (!cfg.kernel_bugs)
		ksft_print_msg("a kernel bug (fork-shared THP split by migrate_vma_pages()) is avoided: whole THPs go to coherent devices, or with HMM_RS_REQ_THP to a node, only with no fork child alive; HMM_RS_KERNEL_BUGS=1 hits it\n");
	for (i = 0; i < ncases; i++) {
		if (coherent(run[i]->devs[run[i]->ndevs - 1]) && !has_coherent) {
			ksft_test_result_skip("stress.%s: no /dev/hmm_dmirror2 and 3 (module without spm_addr_dev0/1)\n",
					      run[i]->name);
			continue;
		}
		fflush(stdout);
		if (run_case(run[i])) {
			ksft_test_result_pass("stress.%s\n", run[i]->name);
		} else {
			ksft_print_msg("stress.%s failed; replay: %s\n", run[i]->name,
				       replay);
			ksft_test_result_fail("stress.%s\n", run[i]->name);
		}
	}
	ksft_finished();
}
