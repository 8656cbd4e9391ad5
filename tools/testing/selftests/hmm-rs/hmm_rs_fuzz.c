// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs fuzzer: random sequences of every dmirror operation, from several
 * threads at once, on every dmirror device there is (/dev/hmm_dmirror0-3),
 * while another thread changes the address space under them.
 *
 * The fuzzing threads (HMM_RS_FUZZ_THREADS, 3) draw from:
 *  - ioctl: every dmirror command; unknown ones ('H' numbers past the
 *    last); known numbers with a wrong size or direction; foreign numbers.
 *    The range: an "arena" of adjacent VMAs of every kind (anonymous
 *    read-write, read-only and PROT_NONE; a shared memfd; a private mapping
 *    of a file in /tmp (tmpfs); a shared and a private mapping of a file on
 *    a ramfs mount (page cache that is not shmem); a mapping of the device
 *    itself; a hole; 4 MiB of THP; 4 MiB of hugetlbfs) so that one range
 *    can span several of them; the [vdso], [vvar] and [vvar_vclock]
 *    (VM_IO | VM_PFNMAP) mappings and a PCI BAR (VM_IO | VM_PFNMAP) if
 *    sysfs offers one; unmapped, below mmap_min_addr, non-canonical,
 *    kernel, vsyscall and just-below-2^64 addresses; unaligned ones. Page
 *    counts: 0, 1, small, up to 1024, 2^16, 2^40, ending exactly at 2^64,
 *    overflowing (in 64 bits, and in npages << PAGE_SHIFT only). The
 *    buffer: valid, too short (a guard page after it), unaligned, NULL,
 *    kernel, read-only, the range itself or overlapping it, the command
 *    itself. The command: valid, unaligned, NULL, kernel, read-only (the
 *    result cannot be written back), straddling a PROT_NONE page, garbage
 *    from the arena. The file: any of a pool, which also gets closed and
 *    reopened (see "close" below), so a call may land on a closed file.
 *  - HMM_RS_MIGRATE (include/uapi/hmm_rs.h), one call in sixteen: the
 *    same ranges and files, and (a quarter of the calls, not in a fork
 *    child) the thread's own range: 32 small anonymous pages that nothing
 *    else names, through files of its own, with a model of what they
 *    hold. Random selections; destinations (the device, system memory, a
 *    NUMA node, an unknown one); requests (HMM_RS_REQ_NOT_ON_NODE too,
 *    also where it does not belong), source devices, mostly valid; a node,
 *    mostly 0 or 1, sometimes 2, 63, 64, 1024, INT32_MAX, 2^31, UINT32_MAX
 *    or anything, also without HMM_RS_DST_NODE; the reserved word mostly
 *    0; a status array that is absent, the thread's own, too short,
 *    read-only or the kernel's.
 *  - mmap of the device: random length (0, unaligned, up to 4 MiB, past the
 *    address space), offset (unaligned, overflowing), protection and flags
 *    (private, populate, locked, unknown); an ioctl on the mapping, a CPU
 *    access, munmap.
 *  - close: a file of the pool is replaced by a new one of a random device
 *    and closed, while the other threads may be inside an ioctl or mmap on
 *    it (or, once its number is reused, on the new file).
 * The mutating thread, on arena ranges: munmap; mmap over them (anonymous,
 * the region's file, the device); mprotect; madvise (DONTNEED, PAGEOUT,
 * FREE, COLD, WILLNEED, REMOVE, POPULATE_*, [NO]HUGEPAGE, COLLAPSE,
 * [DO|DONT]FORK, WIPE/KEEPONFORK); mremap; truncating the files; CPU reads
 * and writes (device-private pages fault back); restoring a region; and
 * fork: the child issues ioctls on the same ranges through the inherited
 * files (which mirror the parent), touches them, migrates its own copies
 * through a file of its own, and exits.
 *
 * Cases (the runner adds: no kernel splat, the module unloads):
 *  fuzz.invalid_calls_fail: a call the drivers must reject fails: an
 *    unaligned address, 0 pages, a range that wraps or whose size
 *    overflows (npages << PAGE_SHIFT included), an unknown command or
 *    size, a command the kernel cannot read (EFAULT), a READ, WRITE,
 *    migration or EXCLUSIVE where no user mapping can be, a command whose
 *    result cannot be written back; a READ, WRITE or SNAPSHOT that
 *    succeeds reports all its pages in cpages.
 *    HMM_RS_MIGRATE, judged by the uapi's "Errors" (the nodes with memory
 *    from /sys/devices/system/node/has_memory, the devices from /dev): a
 *    request malformed by its fields (unknown bits, reserved not 0, a
 *    node without HMM_RS_DST_NODE, HMM_RS_REQ_NOT_ON_NODE without
 *    HMM_RS_DST_NODE and HMM_RS_SELECT_SYSTEM, a selection the
 *    destination does not take, a bad range, ...) fails with EINVAL, one
 *    naming a node without memory or a device that does not exist with
 *    ENODEV (either, if it has both defects; EINVAL too where the range
 *    may not be mapped, EFAULT where the status array may not be
 *    writable), and changes nothing: the command and the status array
 *    stay as they were. ENODEV comes from nothing else, EFAULT from a
 *    writable status array never (unless a fault was requested on a
 *    range the mutator may have cut short), no kernel-internal errno
 *    ever. A call that succeeds had a valid request, a writable status
 *    array and a mapped range; its counts add up to its pages and agree
 *    with its status bytes, which each carry a reason; ON_NODE only with
 *    HMM_RS_REQ_NOT_ON_NODE, WHOLE only with HMM_RS_REQ_THP (or on a huge
 *    page the filter keeps whole: ON_NODE). On the own
 *    range also: a valid request is not refused with EINVAL, ENODEV or
 *    EFAULT, a malformed one with exactly its errno; where move_pages(2)
 *    finds the pages before and after the call agrees with it: a refused
 *    call (or one with a read-only status array) moved none, a page
 *    MIGRATED to a node is on it, to system memory a system page, to a
 *    device not one, a page ON_NODE is on the node and was there before
 *    (unless faulted in), and the filter moved no page already there; and
 *    the pages hold what the model says, whatever the calls did.
 *  fuzz.children_exited: every fork child exited normally.
 *  fuzz.devices_work: afterwards each device still READs what the CPU
 *    wrote, WRITEs what the CPU then reads, and migrates a range to itself
 *    and back with its contents intact.
 *  fuzz.no_stall: no operation took HMM_RS_FUZZ_STALL_SECS (60), and some
 *    operation ended in every such period. A watchdog process checks it
 *    (a thread stuck in the kernel with the mmap_lock hangs every thread
 *    that faults): it prints each thread's operation and kernel stack, the
 *    counts, fails the cases not reported yet and kills the fuzzer.
 * The process must survive every call (a crash cuts the TAP plan short).
 *
 * Two kernel bugs (7.3, patches/README) are kept out of reach, since
 * either driver would hit them: HMM_DMIRROR_RELEASE evicts device memory
 * with migrate_device_range(), which races unmap and exit (a use after
 * free of the anon_vma): RELEASE takes a lock that munmap, mmap, mremap
 * and a fork child's life take shared. And a migration to the device,
 * page by page, of a THP that another process (a fork child) maps with a
 * PMD too, splits the folio under that PMD (an Oops): the child splits
 * its PMDs before the parent may migrate again, and before it migrates.
 * HMM_RS_KERNEL_BUGS=1 does neither.
 *
 * HMM_RS_FUZZ_DEVICES (e.g. "23") limits the devices to those numbers.
 * HMM_RS_FUZZ_HUGE=0 leaves out the huge page counts that pass a range
 * check (2^16, 2^40, up to a page below 2^64), for a driver whose work
 * grows with the count instead of with what is mapped: test_hmm's
 * CHECK_EXCLUSIVE takes hours over 2^40 pages, and cannot be killed.
 *
 * Seeded and bounded: HMM_RS_FUZZ_SEED (default: from the clock) seeds
 * each thread's generator; HMM_RS_FUZZ_CALLS (100000; 0: no limit) calls
 * of the fuzzing threads, HMM_RS_FUZZ_SECS (300), whichever ends first.
 * The threads race with each other: a replay with the same seed repeats
 * each thread's sequence of operations, not their interleaving, so a
 * failure found by a race need not come back on replay. Prints the seed
 * and the command that replays it, the calls made, and per operation the
 * time spent in it and the count of each result (ok, an errno, for CPU
 * accesses the signal, for fork children how they ended).
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest.h"
#include "hmm_rs.h"
#include "uapi/hmm_rs.h"

#define MAX_THREADS 8
#define NPOOL 6
#define BUF_PAGES 1024
#define OWN_PAGES 32		/* a fuzzing thread's own range */
#define HPAGE (2UL << 20)
#define MAX_ERRNO 140
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x) __atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)

#ifndef fallthrough
#define fallthrough __attribute__((__fallthrough__))
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* ksft_print_msg(), flushed: a crash or a stuck thread must not eat it. */
#define note(...) do {				\
	ksft_print_msg(__VA_ARGS__);		\
	fflush(stdout);				\
} while (0)

/* The rows of the result table; the first ten are the dmirror commands. */
enum {
	OP_READ, OP_WRITE, OP_MIGRATE_TO_DEV, OP_MIGRATE_TO_SYS, OP_SNAPSHOT,
	OP_EXCLUSIVE, OP_CHECK_EXCLUSIVE, OP_RELEASE, OP_FLAGS,
	OP_READ_UNLOCKED, NCMDS,
	OP_UNKNOWN = NCMDS, OP_BADSIZE, OP_FOREIGN, OP_DEVMMAP, OP_CLOSE,
	OP_REOPEN, OP_MUNMAP, OP_MMAP, OP_MPROTECT, OP_MADVISE, OP_MREMAP,
	OP_TRUNCATE, OP_TOUCH, OP_FORK, OP_RS_MIGRATE, NOPS
};

static const char *const op_names[NOPS] = {
	"READ", "WRITE", "MIGRATE_TO_DEV", "MIGRATE_TO_SYS", "SNAPSHOT",
	"EXCLUSIVE", "CHECK_EXCLUSIVE", "RELEASE", "FLAGS", "READ_UNLOCKED",
	"unknown cmd", "bad size/dir", "foreign cmd", "mmap(device)",
	"close", "reopen", "munmap", "mmap(fixed)", "mprotect", "madvise",
	"mremap", "truncate", "cpu access", "fork", "HMM_RS_MIGRATE",
};

static const unsigned long cmds[NCMDS] = {
	HMM_DMIRROR_READ, HMM_DMIRROR_WRITE, HMM_DMIRROR_MIGRATE_TO_DEV,
	HMM_DMIRROR_MIGRATE_TO_SYS, HMM_DMIRROR_SNAPSHOT,
	HMM_DMIRROR_EXCLUSIVE, HMM_DMIRROR_CHECK_EXCLUSIVE,
	HMM_DMIRROR_RELEASE, HMM_DMIRROR_FLAGS, HMM_DMIRROR_READ_UNLOCKED,
};

/*
 * Result columns: an errno (0: ok), one for any errno past MAX_ERRNO (the
 * kernel's internal ones, which must not reach user space), then the
 * signals of a CPU access and how a fork child ended.
 */
enum { R_BIG = MAX_ERRNO + 1, R_SEGV, R_BUS, R_SIGNAL, R_EXIT, NRES };

struct violation {
	int op, ret, arg;
	unsigned long req;
	uint64_t addr, ptr, npages, cpages;
	const char *why;
	char detail[160];	/* HMM_RS_MIGRATE: the request, the page */
};

/*
 * What a thread (or the fork child, or the main thread) is doing, for the
 * watchdog: in shared memory, since the watchdog is a process of its own.
 */
struct status {
	const char *what;	/* a string of the binary: the same everywhere */
	unsigned long req;
	uint64_t addr, npages;
	int fd;
	pid_t tid;
	long long since;	/* ms; 0: between operations */
	char dev[24];		/* the fork child's own device, if any */
};

/* Status slots: the fuzzing threads, then these. */
enum { SLOT_MUTATOR = 8, SLOT_CHILD, SLOT_MAIN, NSLOTS };

/* Shared with the fork children and the watchdog (MAP_SHARED). */
struct shared {
	unsigned long counts[NOPS][NRES];
	unsigned long usecs[NOPS];
	unsigned long nviolations;
	struct violation violations[8];
	unsigned long child_calls;
	unsigned long killed_children;
	/* HMM_RS_MIGRATE to a node: calls, ok, ENODEV; pages moved, ON_NODE */
	unsigned long node_calls, node_ok, node_enodev, node_moved, node_kept;
	/* On the threads' own ranges: calls, pages placed and data checked */
	unsigned long own_calls, own_placed, own_data;
	int child_ready;
	struct status st[NSLOTS];
	unsigned long progress;	/* operations ended */
	int reported;		/* TAP results printed */
	int done;
};

static struct shared *sh;

/* The arena: regions of every kind, adjacent, in this order. */
enum {
	K_THP, K_HUGETLB, K_ANON_RW, K_MEMFD, K_ANON_RO, K_TMPFILE, K_DEVMAP,
	K_RAMFS_SHARED, K_HOLE, K_RAMFS_PRIVATE, K_ANON_NONE, NREGIONS
};

static const char *const region_names[NREGIONS] = {
	"thp", "hugetlbfs", "anon-rw", "memfd-shared", "anon-ro",
	"tmpfs-private", "device", "ramfs-shared", "hole", "ramfs-private",
	"anon-none",
};

static const size_t region_pages[NREGIONS] = {
	1024, 1024, 64, 32, 32, 32, 16, 32, 16, 32, 32,
};

static char *arena;
static size_t arena_size, region_off[NREGIONS], region_size[NREGIONS];
/* The file behind each file region (-1: none). */
static int region_fd[NREGIONS];
static int hugetlb_ok;

/* Mappings the fuzzer does not own but may name: [vdso], [vvar], ... */
struct special {
	const char *name;
	uintptr_t start;
	size_t size;
};

static struct special specials[8];
static int nspecials;

static const char *devices[4];
static int dev_ids[4];		/* the number of each */
static int ndevices;
/* The driver's devices (HMM_RS_FUZZ_DEVICES aside), for src_dev. */
static int nmod_devices;
/* Whether the driver has HMM_RS_MIGRATE (the C test_hmm has not). */
static int rs_ok;
/* The nodes with memory (hmm_rs_memory_nodes()). */
static char mem_nodes[256];
static int pool[NPOOL];

static char *buf;		/* BUF_PAGES pages, then a PROT_NONE page */
static long page_size;
static int stop;
static int kernel_bugs;
static int huge = 1;
static double stall_secs = 60;
static unsigned long calls = 100000, issued, finished;
/* Taken by RELEASE, shared by what can free an anon_vma. */
static pthread_rwlock_t evict_lock;
/* Taken by fork until the child split its THP mappings; shared by migrations. */
static pthread_rwlock_t fork_lock;

struct worker {
	int id;
	pthread_t thread;
	uint64_t rng;
	char *scratch;		/* a page for the command, then PROT_NONE */
	char *scratch_ro;	/* the same page, read-only */
	struct status *st;
	unsigned long ops;
	/*
	 * Its own range: OWN_PAGES private anonymous small pages that no
	 * other thread names, what they hold, and a file of each device
	 * (by number, -1: none) that no other thread closes.
	 */
	char *own, *own_model;
	int own_fd[4];
};

static struct worker workers[MAX_THREADS + 1];
static int nthreads = 2;

/* A CPU access that may fault: the handler jumps back to touch(). */
static __thread sigjmp_buf touch_jmp;
static __thread int touch_armed;	/* __atomic: the handler reads it */
/* When the thread's operation began, or its last part was counted. */
static __thread double mark;

static long long now_ms(void)
{
	return now() * 1000 + 1;
}

/* xorshift64*: one generator per thread, seeded from the run's seed. */
static uint64_t next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static uint64_t pick(uint64_t *s, uint64_t n)
{
	return n ? next(s) % n : 0;
}

/* splitmix64: the seed of thread @i, never 0. */
static uint64_t thread_seed(uint64_t seed, int i)
{
	uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return z ? z : 1;
}

/* Counts result @res (0, an errno, negative or not, or an R_*) of @op. */
static void count(int op, int res)
{
	if (res < 0)
		res = -res;
	if (res > MAX_ERRNO && res < R_SEGV)
		res = R_BIG;
	INC(sh->counts[op][res]);
	if (mark) {
		double t = now();

		__atomic_fetch_add(&sh->usecs[op], (unsigned long)((t - mark) * 1e6),
				   __ATOMIC_RELAXED);
		mark = t;
	}
}

static void begin_st(struct status *st, const char *what, unsigned long req,
		     uint64_t addr, uint64_t npages, int fd)
{
	st->what = what;
	st->req = req;
	st->addr = addr;
	st->npages = npages;
	st->fd = fd;
	mark = now();
	STORE(st->since, (long long)(mark * 1000) + 1);
}

static void end_st(struct status *st)
{
	STORE(st->since, 0LL);
	INC(sh->progress);
}

static void begin(struct worker *w, const char *what, unsigned long req,
		  uint64_t addr, uint64_t npages, int fd)
{
	begin_st(w->st, what, req, addr, npages, fd);
}

static void end(struct worker *w)
{
	end_st(w->st);
	w->ops++;
}

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
	if (__atomic_load_n(&touch_armed, __ATOMIC_SEQ_CST)) {
		__atomic_store_n(&touch_armed, 0, __ATOMIC_SEQ_CST);
		siglongjmp(touch_jmp, sig);
	}
	/* Not a guarded access: die of it. */
	signal(sig, SIG_DFL);
}

/*
 * Reads (or writes @val to) one byte of each page of [@p, @p + @len):
 * 0, or R_SEGV / R_BUS if an access faulted.
 */
static int touch(char *p, size_t len, int write, int val)
{
	size_t off;
	int sig;

	sig = sigsetjmp(touch_jmp, 1);
	if (sig)
		return sig == SIGBUS ? R_BUS : R_SEGV;
	__atomic_store_n(&touch_armed, 1, __ATOMIC_SEQ_CST);
	/* Atomic accesses: real ones, each of them. */
	for (off = 0; off < len; off += page_size) {
		if (write)
			__atomic_store_n(&p[off], val, __ATOMIC_RELAXED);
		else
			__atomic_load_n(&p[off], __ATOMIC_RELAXED);
	}
	__atomic_store_n(&touch_armed, 0, __ATOMIC_SEQ_CST);
	return 0;
}

static int pool_fd(uint64_t *s)
{
	return LOAD(pool[pick(s, NPOOL)]);
}

/* Address classes, for what a call on them may do. */
enum { A_USER, A_NOMAP, A_UNALIGNED };

static uint64_t random_addr(uint64_t *s, int *cls)
{
	int r = pick(s, NREGIONS);
	uint64_t a;

	*cls = A_NOMAP;
	switch (pick(s, 24)) {
	case 0:	/* an address nobody maps */
		return 0x100000000000ULL + pick(s, 1 << 20) * page_size;
	case 1:	/* the kernel's */
		return 0xffff888000000000ULL + pick(s, 1 << 20) * page_size;
	case 2:	/* just below 2^64 */
		return -(uint64_t)((1 + pick(s, 600)) * page_size);
	case 3:	/* [vsyscall] */
		return 0xffffffffff600000ULL;
	case 4:	/* non-canonical */
		return 0x800000000000ULL + pick(s, 1 << 30) * page_size;
	case 5:	/* below mmap_min_addr, 0 included */
		return pick(s, 16) * page_size;
	case 6:
		*cls = A_UNALIGNED;
		return (uintptr_t)arena + pick(s, arena_size / page_size) * page_size +
			1 + pick(s, page_size - 1);
	case 7:
	case 8:
		*cls = A_USER;
		if (nspecials) {
			struct special *sp = &specials[pick(s, nspecials)];

			return sp->start + pick(s, sp->size / page_size) * page_size;
		}
		fallthrough;
	case 9:
	case 10:
	case 11:
		*cls = A_USER;
		return (uintptr_t)arena + pick(s, arena_size / page_size) * page_size;
	default:	/* in a region, maybe running past its end */
		*cls = A_USER;
		a = (uintptr_t)arena + region_off[r];
		if (r == K_HUGETLB && pick(s, 2))
			return a + pick(s, region_size[r] / HPAGE) * HPAGE;
		return a + pick(s, region_size[r] / page_size + 8) * page_size;
	}
}

static uint64_t random_npages(uint64_t *s, uint64_t addr)
{
	int k = pick(s, 24);

	/* Without huge counts, those that a range check accepts are small. */
	if (!huge && (k == 3 || k == 7 || k == 8))
		k = 12;
	switch (k) {
	case 0:
		return 0;
	case 1:
	case 2:
		return 1;
	case 3:
		return 1ULL << 40;
	case 4:	/* overflows in bytes */
		return UINT64_MAX / page_size + 1 + pick(s, 3);
	case 5:
		return UINT64_MAX - pick(s, 2);
	case 6:	/* npages << PAGE_SHIFT wraps to a small size */
		return (1ULL << (64 - 12)) + 1 + pick(s, 15);
	case 7:	/* ends exactly at 2^64, or a page before */
		return (-addr) / page_size - pick(s, 2);
	case 19:	/* ends exactly at 2^64 */
		return (-addr) / page_size;
	case 8:
		return 1ULL << 16;
	case 9:
	case 10:
	case 11:
		return 1 + pick(s, BUF_PAGES);
	default:
		return 1 + pick(s, 64);
	}
}

/* The command's buffer. @cmd is where the command itself is. */
static uint64_t random_ptr(uint64_t *s, struct worker *w, uint64_t addr,
			   void *cmd)
{
	switch (pick(s, 20)) {
	case 0:
		return 0;
	case 1:
		return 0xffff888000000000ULL;
	case 2:	/* too short: the guard page follows */
		return (uintptr_t)buf + (BUF_PAGES - 1 - pick(s, 8)) * page_size;
	case 3:
		return (uintptr_t)buf + 1 + pick(s, page_size - 1);
	case 4:	/* the range itself */
		return addr;
	case 5:	/* overlapping it */
		return addr + (1 + pick(s, 8)) * page_size;
	case 6:
		return (uintptr_t)arena + pick(s, arena_size / page_size) * page_size;
	case 7:	/* read-only */
		return (uintptr_t)w->scratch_ro;
	case 8:	/* the command */
		return (uintptr_t)cmd;
	case 9:
		if (nspecials)
			return specials[0].start;
		fallthrough;
	default:
		return (uintptr_t)buf;
	}
}

/* The request of an ioctl: returns its row. */
static int random_request(uint64_t *s, unsigned long *req, int child)
{
	static const unsigned int sizes[] = { 0, 8, 32, 39, 41, 48, 4096, 0x3fff };
	int k = pick(s, 64), c, dir, size;

	if (k < 54) {
		c = pick(s, NCMDS);
		/* RELEASE evicts everything: now and then only. */
		if (c == OP_RELEASE && (child || pick(s, 50)))
			c = OP_CHECK_EXCLUSIVE;
		if (c == OP_FLAGS && pick(s, 4))
			c = OP_SNAPSHOT;
		*req = cmds[c];
		return c;
	}
	if (k < 58) {
		*req = _IOWR('H', NCMDS + pick(s, 256 - NCMDS), struct hmm_dmirror_cmd);
		return OP_UNKNOWN;
	}
	if (k < 63) {
		dir = pick(s, 4);
		size = sizes[pick(s, ARRAY_SIZE(sizes))];
		if (dir == (_IOC_READ | _IOC_WRITE) && size == 40)
			size = 0;
		*req = _IOC(dir, 'H', pick(s, NCMDS), size);
		return OP_BADSIZE;
	}
	/* Any other number, but not one the VFS handles itself ('f', 'X', 'T'). */
	do {
		*req = (uint32_t)next(s);
	} while (strchr("fXT\x94", _IOC_TYPE(*req)) || _IOC_TYPE(*req) == 'H');
	return OP_FOREIGN;
}

/* Records a violation; returns its slot, NULL once they are full. */
static struct violation *violation(int op, unsigned long req,
				   struct hmm_dmirror_cmd *in,
				   struct hmm_dmirror_cmd *out, int arg,
				   int ret, const char *why)
{
	unsigned long n = INC(sh->nviolations);
	struct violation *v;

	if (n >= ARRAY_SIZE(sh->violations))
		return NULL;
	v = &sh->violations[n];
	v->op = op;
	v->req = req;
	v->addr = in->addr;
	v->ptr = in->ptr;
	v->npages = in->npages;
	v->cpages = out ? out->cpages : 0;
	v->arg = arg;
	v->ret = ret;
	v->why = why;
	v->detail[0] = 0;
	return v;
}

/* How the command is passed. */
enum { ARG_OK, ARG_UNALIGNED, ARG_RO, ARG_NULL, ARG_KERNEL, ARG_STRADDLE,
	ARG_ARENA };

static const char *const arg_names[] = {
	"valid", "unaligned", "read-only", "NULL", "kernel", "straddling",
	"arena",
};

/* What a call whose command the kernel read must have done. */
static void check_call(int op, unsigned long req, struct hmm_dmirror_cmd *in,
		       struct hmm_dmirror_cmd *out, int arg, int cls, int ret)
{
	uint64_t a = in->addr, n = in->npages;
	int faulting = op == OP_READ || op == OP_WRITE || op == OP_READ_UNLOCKED ||
		       op == OP_MIGRATE_TO_DEV || op == OP_MIGRATE_TO_SYS ||
		       op == OP_EXCLUSIVE;

	/* A pool file closed (or its number reused) under us. */
	if (ret == -EBADF || ret == -ENOTTY || op == OP_FOREIGN || arg == ARG_ARENA)
		return;
	if (arg == ARG_NULL || arg == ARG_KERNEL || arg == ARG_STRADDLE) {
		if (ret != -EFAULT)
			violation(op, req, in, NULL, arg, ret,
				  "unreadable command, not EFAULT");
		return;
	}
	if (ret)
		return;
	if (op == OP_UNKNOWN || op == OP_BADSIZE)
		violation(op, req, in, out, arg, ret, "unknown command accepted");
	else if (a % page_size)
		violation(op, req, in, out, arg, ret, "unaligned address accepted");
	else if (!n)
		violation(op, req, in, out, arg, ret, "0 pages accepted");
	else if (n > UINT64_MAX / page_size || a + n * page_size < a ||
		 a + n * page_size == 0)
		violation(op, req, in, out, arg, ret,
			  "overflowing or wrapping range accepted");
	else if (cls == A_NOMAP && faulting)
		violation(op, req, in, out, arg, ret,
			  "access where nothing can be mapped succeeded");
	else if (arg == ARG_RO)
		violation(op, req, in, out, arg, ret,
			  "result written to a read-only command");
	else if ((op == OP_READ || op == OP_WRITE || op == OP_SNAPSHOT ||
		  op == OP_READ_UNLOCKED) && out->cpages != n)
		violation(op, req, in, out, arg, ret, "cpages is not npages");
}

/* One random ioctl on a file of the pool. */
static void fuzz_ioctl(struct worker *w, int child)
{
	uint64_t *s = &w->rng;
	struct hmm_dmirror_cmd in, out, *cmd;
	unsigned long req;
	int op, cls, arg, ret, fd;
	char *argp;

	op = random_request(s, &req, child);
	in.addr = random_addr(s, &cls);
	in.npages = random_npages(s, in.addr);
	in.cpages = next(s);
	in.faults = next(s);
	arg = pick(s, 24);
	if (arg > ARG_ARENA)
		arg = ARG_OK;
	cmd = (struct hmm_dmirror_cmd *)(w->scratch +
		(arg == ARG_UNALIGNED ? 1 + pick(s, 7) : 0) +
		8 * pick(s, page_size / 8 - 6));
	if (arg == ARG_STRADDLE)
		cmd = (struct hmm_dmirror_cmd *)(w->scratch + page_size - 8 * (1 + pick(s, 4)));
	in.ptr = random_ptr(s, w, in.addr, cmd);
	/*
	 * SNAPSHOT writes a byte per page: with a huge count, it walks as
	 * far as the buffer goes (16 GiB of address space for buf). Mostly
	 * a short buffer then.
	 */
	if (op == OP_SNAPSHOT && in.npages > BUF_PAGES && pick(s, 4))
		in.ptr = (uintptr_t)buf + (BUF_PAGES - 1) * page_size;
	/* Unaligned: by memcpy. Straddling: what fits of it. */
	memcpy(cmd, &in, arg == ARG_STRADDLE ?
	       w->scratch + page_size - (char *)cmd : sizeof(in));
	switch (arg) {
	case ARG_RO:
		argp = w->scratch_ro + ((char *)cmd - w->scratch);
		break;
	case ARG_NULL:
		argp = NULL;
		break;
	case ARG_KERNEL:
		argp = (char *)0xffff888000001000ULL;
		break;
	case ARG_ARENA:
		argp = arena + pick(s, arena_size - sizeof(in));
		break;
	default:
		argp = (char *)cmd;
		break;
	}
	fd = pool_fd(s);
	if (req == HMM_DMIRROR_RELEASE && !kernel_bugs)
		pthread_rwlock_wrlock(&evict_lock);
	if (req == HMM_DMIRROR_MIGRATE_TO_DEV && !child && !kernel_bugs)
		pthread_rwlock_rdlock(&fork_lock);
	begin(w, op_names[op], req, in.addr, in.npages, fd);
	ret = ioctl(fd, req, argp) ? -errno : 0;
	end(w);
	if (req == HMM_DMIRROR_MIGRATE_TO_DEV && !child && !kernel_bugs)
		pthread_rwlock_unlock(&fork_lock);
	if (req == HMM_DMIRROR_RELEASE && !kernel_bugs)
		pthread_rwlock_unlock(&evict_lock);
	count(op, ret);
	if (arg == ARG_OK || arg == ARG_UNALIGNED)
		memcpy(&out, cmd, sizeof(out));
	else
		out = in;
	check_call(op, req, &in, &out, arg, cls, ret);
}

static void arena_range(uint64_t *s, char **p, size_t *len);

#define RS_STATUS_OFF 256	/* status bytes in the scratch page */
#define RS_SENTINEL 0xee	/* a status byte the driver never writes */

static void evict_shared(void)
{
	if (!kernel_bugs)
		pthread_rwlock_rdlock(&evict_lock);
}

static void evict_unlock(void)
{
	if (!kernel_bugs)
		pthread_rwlock_unlock(&evict_lock);
}

/* A node for HMM_RS_MIGRATE: mostly 0 or 1, sometimes one without memory. */
static uint32_t random_node(uint64_t *s)
{
	static const uint32_t odd[] = {
		2, 63, 64, 1024, INT32_MAX, 1U << 31, UINT32_MAX,
	};

	switch (pick(s, 16)) {
	case 0:
	case 1:
		return odd[pick(s, ARRAY_SIZE(odd))];
	case 2:
		return next(s);
	default:
		return pick(s, 2);
	}
}

/*
 * Random selection, destination, requests, source device, node and
 * reserved word of an HMM_RS_MIGRATE, mostly valid ones.
 */
static void random_rs_request(uint64_t *s, struct hmm_rs_migrate *m)
{
	switch (pick(s, 10)) {
	case 0:
	case 1:
	case 2:		/* system memory to the device */
		m->select = HMM_RS_SELECT_SYSTEM;
		m->dst = HMM_RS_DST_DEVICE;
		m->flags = pick(s, 4);		/* THP, FAULT */
		break;
	case 3:
	case 4:		/* device pages back, from this or another device */
		m->select = 2 + pick(s, 3) * 2 % 6;	/* 2, 4 or 6 */
		m->dst = HMM_RS_DST_SYSTEM;
		m->flags = pick(s, 2) | (pick(s, 2) ? HMM_RS_REQ_SRC_DEV : 0);
		break;
	case 5:		/* device to device */
		m->select = 2 + pick(s, 3) * 2 % 6;
		m->dst = HMM_RS_DST_DEVICE;
		m->flags = pick(s, 2) | HMM_RS_REQ_SRC_DEV;
		break;
	case 6:
	case 7:		/* to a node: any selection, maybe from another device */
		m->select = pick(s, 2) ? HMM_RS_SELECT_SYSTEM : 1 + pick(s, 7);
		m->dst = HMM_RS_DST_NODE;
		m->flags = pick(s, 2) ? HMM_RS_REQ_THP : 0;
		if (m->select & HMM_RS_SELECT_SYSTEM) {
			if (pick(s, 2))
				m->flags |= HMM_RS_REQ_NOT_ON_NODE;
			if (!pick(s, 4))
				m->flags |= HMM_RS_REQ_FAULT;
		}
		if (!pick(s, 4)) {
			/* Device kinds only, mostly (else EINVAL). */
			m->flags |= HMM_RS_REQ_SRC_DEV;
			if (pick(s, 8))
				m->select = 2 + pick(s, 3) * 2 % 6;
		}
		/* REQ_THP with SYSTEM and DEVICE_PRIVATE is EINVAL: rarely. */
		if ((m->select & 3) == 3 && pick(s, 8))
			m->flags &= ~HMM_RS_REQ_THP;
		break;
	default:	/* anything: the destination 0 to 3 (3: none), or junk */
		m->select = pick(s, 2) ? pick(s, 16) : (uint32_t)next(s);
		m->dst = pick(s, 4) ? pick(s, 4) : (uint32_t)next(s);
		m->flags = pick(s, 2) ? pick(s, 32) : (uint32_t)next(s);
		break;
	}
	/* The node filter, now and then where it does not belong. */
	if (!pick(s, 16))
		m->flags ^= HMM_RS_REQ_NOT_ON_NODE;
	if (m->flags & HMM_RS_REQ_SRC_DEV || !pick(s, 16))
		m->src_dev = pick(s, 8) ? pick(s, 4) : (uint32_t)next(s);
	if (m->dst == HMM_RS_DST_NODE || !pick(s, 8))
		m->node = random_node(s);
	if (!pick(s, 16))
		m->reserved = pick(s, 2) ? 1U << pick(s, 32) : (uint32_t)next(s);
}

/*
 * What its fields alone make of an HMM_RS_MIGRATE request, by the
 * "Errors" of include/uapi/hmm_rs.h: why it must be refused with EINVAL,
 * why with ENODEV (NULL: no such reason), and whether HMM_RS_REQ_SRC_DEV
 * may name the file's own device (@dev: the file's device, -1: unknown),
 * which is EINVAL.
 */
struct rs_verdict {
	const char *einval, *enodev;
	int maybe;
};

/* If @cond holds, @why is @v's reason for EINVAL, unless an earlier one is. */
static void rs_einval(struct rs_verdict *v, bool cond, const char *why)
{
	if (cond && !v->einval)
		v->einval = why;
}

static void rs_judge(const struct hmm_rs_migrate *m, int dev,
		     struct rs_verdict *v)
{
	int sys = !!(m->select & HMM_RS_SELECT_SYSTEM);
	int src = !!(m->flags & HMM_RS_REQ_SRC_DEV);
	uint64_t a = m->addr, n = m->npages;

	memset(v, 0, sizeof(*v));
	rs_einval(v, m->select & ~HMM_RS_SELECT_ALL, "unknown select bits");
	rs_einval(v, !m->select, "nothing selected");
	rs_einval(v, m->flags & ~HMM_RS_REQ_ALL, "unknown request bits");
	rs_einval(v, m->reserved, "reserved is not 0");
	if (src && m->src_dev >= (uint32_t)nmod_devices)
		v->enodev = "src_dev does not exist";
	else if (src && dev < 0)
		v->maybe = 1;
	rs_einval(v, src && (int64_t)m->src_dev == dev,
		  "src_dev is the file's device");
	rs_einval(v, !src && m->src_dev, "src_dev without HMM_RS_REQ_SRC_DEV");
	rs_einval(v, m->flags & HMM_RS_REQ_FAULT && !sys,
		  "HMM_RS_REQ_FAULT without HMM_RS_SELECT_SYSTEM");
	rs_einval(v, src && sys, "HMM_RS_REQ_SRC_DEV with HMM_RS_SELECT_SYSTEM");
	rs_einval(v, m->flags & HMM_RS_REQ_THP && sys &&
		  m->select & HMM_RS_SELECT_DEVICE_PRIVATE,
		  "HMM_RS_REQ_THP with SYSTEM and DEVICE_PRIVATE");
	switch (m->dst) {
	case HMM_RS_DST_DEVICE:
		rs_einval(v, src ? sys : m->select != HMM_RS_SELECT_SYSTEM,
			  "a selection HMM_RS_DST_DEVICE does not take");
		break;
	case HMM_RS_DST_SYSTEM:
		rs_einval(v, sys, "system memory to HMM_RS_DST_SYSTEM");
		break;
	case HMM_RS_DST_NODE:
		if (!hmm_rs_node_in(mem_nodes, m->node) && !v->enodev)
			v->enodev = "a node without memory";
		break;
	default:
		rs_einval(v, 1, "unknown destination");
		break;
	}
	rs_einval(v, m->node && m->dst != HMM_RS_DST_NODE,
		  "a node without HMM_RS_DST_NODE");
	rs_einval(v, m->flags & HMM_RS_REQ_NOT_ON_NODE &&
		  !(sys && m->dst == HMM_RS_DST_NODE),
		  "HMM_RS_REQ_NOT_ON_NODE without HMM_RS_DST_NODE and HMM_RS_SELECT_SYSTEM");
	rs_einval(v, a % page_size || !n || n > UINT64_MAX / page_size ||
		  a + n * page_size < a || a + n * page_size == 0,
		  "a bad range");
}

/* A violation of HMM_RS_MIGRATE @in through a file of device @dev. */
static __printf(5, 6) void
rs_violation(const struct hmm_rs_migrate *in, int dev, int ret,
	     const char *why, const char *fmt, ...)
{
	struct hmm_dmirror_cmd c = {
		.addr = in->addr, .ptr = in->status, .npages = in->npages,
	};
	struct violation *v;
	va_list ap;
	int len;

	v = violation(OP_RS_MIGRATE, HMM_RS_MIGRATE, &c, NULL, ARG_OK, ret, why);
	if (!v)
		return;
	len = snprintf(v->detail, sizeof(v->detail),
		       "; select %#x dst %#x flags %#x src_dev %#x node %#x reserved %#x, dev %d",
		       in->select, in->dst, in->flags, in->src_dev, in->node,
		       in->reserved, dev);
	if (fmt && len < (int)sizeof(v->detail)) {
		va_start(ap, fmt);
		vsnprintf(v->detail + len, sizeof(v->detail) - len, fmt, ap);
		va_end(ap);
	}
}

/*
 * Now and then (@always: now) new contents for some pages of @w's own
 * range, or none (a zap), in the model as well.
 */
static void own_refresh(struct worker *w, int always)
{
	uint64_t *s = &w->rng;
	size_t off, n, i;
	uint64_t v, k;

	if (!always && pick(s, 8))
		return;
	off = pick(s, OWN_PAGES);
	n = 1 + pick(s, OWN_PAGES - off);
	if (pick(s, 4)) {
		/* As hmm_rs_stress fills pages: every word differs. */
		v = next(s);
		k = next(s) | 1;
		for (i = 0; i < n * page_size; i += 8, v += k)
			memcpy(w->own_model + off * page_size + i, &v, 8);
		memcpy(w->own + off * page_size, w->own_model + off * page_size,
		       n * page_size);
	} else {
		madvise(w->own + off * page_size, n * page_size, MADV_DONTNEED);
		memset(w->own_model + off * page_size, 0, n * page_size);
	}
}

/*
 * The checks of a call on the thread's own range, which nothing else
 * moves: a refused request changed nothing, and what a successful one
 * says of each page, where move_pages(2) finds it (@before and @after the
 * call, @after[i] INT32_MIN: unknown) agrees with.
 */
static void own_check(const struct hmm_rs_migrate *in, int dev, int ret,
		      int refused, const unsigned char *status,
		      const int *before, const int *after)
{
	uint64_t i, n = in->npages;
	int node = in->node, r;

	if (after[0] == INT32_MIN)
		return;
	INC(sh->own_placed);
	for (i = 0; i < n; i++) {
		if (refused) {
			if (before[i] != after[i]) {
				rs_violation(in, dev, ret,
					     "HMM_RS_MIGRATE: a refused call moved a page",
					     ", page %llu: node %d before, %d after",
					     (unsigned long long)i, before[i], after[i]);
				return;
			}
			continue;
		}
		if (!status)
			return;
		r = status[i] & HMM_RS_STATUS_REASON;
		if (r == HMM_RS_MIGRATED &&
		    (in->dst == HMM_RS_DST_NODE ? after[i] != node :
		     in->dst == HMM_RS_DST_SYSTEM ? after[i] < 0 : after[i] >= 0)) {
			rs_violation(in, dev, ret, in->dst == HMM_RS_DST_NODE ?
				     "HMM_RS_MIGRATE: a page MIGRATED to a node is not there" :
				     "HMM_RS_MIGRATE: a page MIGRATED is not where it went",
				     ", page %llu: node %d before, %d after",
				     (unsigned long long)i, before[i], after[i]);
			return;
		}
		/* Faulted in first, a page may land on the node. */
		if (r == HMM_RS_ON_NODE &&
		    (after[i] != node || (before[i] != node &&
		     !(in->flags & HMM_RS_REQ_FAULT && before[i] < 0)))) {
			rs_violation(in, dev, ret,
				     "HMM_RS_MIGRATE: ON_NODE for a page that was not on the node",
				     ", page %llu: node %d before, %d after",
				     (unsigned long long)i, before[i], after[i]);
			return;
		}
		if (r == HMM_RS_MIGRATED && before[i] == node &&
		    in->flags & HMM_RS_REQ_NOT_ON_NODE) {
			rs_violation(in, dev, ret,
				     "HMM_RS_MIGRATE: NOT_ON_NODE moved a page already on the node",
				     ", page %llu", (unsigned long long)i);
			return;
		}
	}
}

/* Whether the own range holds what the model says; else a violation. */
static void own_data(struct worker *w, const struct hmm_rs_migrate *in,
		     int dev, int ret)
{
	size_t i;

	INC(sh->own_data);
	for (i = 0; i < OWN_PAGES; i++)
		if (memcmp(w->own + i * page_size, w->own_model + i * page_size,
			   page_size)) {
			rs_violation(in, dev, ret, "HMM_RS_MIGRATE: own range data changed",
				     ", own page %zu (the call's first is %llu)", i,
				     (unsigned long long)((in->addr - (uintptr_t)w->own) /
							  page_size));
			/* Reported: go on from what is there. */
			memcpy(w->own_model, w->own, OWN_PAGES * page_size);
			return;
		}
}

/*
 * Why refusing @in with @ret is wrong, by rs_judge()'s verdict @v, or NULL.
 * A refusal must have an errno the uapi gives one of its defects: EINVAL
 * also where the range may not be covered by readable mappings (or
 * changed during the call), EFAULT where the status array may not be
 * writable (@writable: its bytes that can be written) or, with a fault
 * requested, a mapping may not be faulted in; runtime errors (ENOMEM,
 * EBUSY) only for a valid request. @own: the range is the thread's own.
 */
static const char *rs_refusal_wrong(const struct hmm_rs_migrate *in, int ret,
				    const struct rs_verdict *v, int own,
				    uint64_t writable)
{
	int bad = v->einval || v->enodev;
	int err = -ret;

	if (ret < -MAX_ERRNO)
		return "HMM_RS_MIGRATE: a kernel-internal errno";
	if (err == ENODEV && !v->enodev)
		return "HMM_RS_MIGRATE: ENODEV for an existing node and device";
	if (err == EINVAL && !v->einval && !v->maybe && own)
		return bad ? "HMM_RS_MIGRATE: EINVAL, not ENODEV" :
		       "HMM_RS_MIGRATE: EINVAL for a valid request on a mapped range";
	if (err == EFAULT && in->npages <= writable &&
	    (own || !(in->flags & HMM_RS_REQ_FAULT)))
		return "HMM_RS_MIGRATE: EFAULT with a writable status array";
	if (bad && err != EINVAL && err != ENODEV && err != EFAULT)
		return "HMM_RS_MIGRATE: a malformed request refused with an errno not its own";
	return NULL;
}

/* Whether one of the @n status bytes from @status is not RS_SENTINEL. */
static bool rs_status_written(const unsigned char *status, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (status[i] != RS_SENTINEL)
			return true;
	return false;
}

/*
 * HMM_RS_MIGRATE (include/uapi/hmm_rs.h) with random fields, mostly
 * valid ones, on random ranges, arena ranges and (not in a fork child)
 * the thread's own range. A request that is malformed by its fields must
 * be refused, with the errno the uapi gives its defect, and change
 * nothing; a call that succeeds must have had a valid request, and its
 * status bytes and counts must agree with each other and with the
 * request; on the own range, with where the pages are, and what they
 * hold.
 */
static void fuzz_rs_migrate(struct worker *w, int child)
{
	uint64_t *s = &w->rng;
	struct hmm_rs_migrate in = { 0 }, *m;
	uint64_t counts[HMM_RS_NR_REASONS] = { 0 }, sum = 0, n, i;
	int before[OWN_PAGES], after[OWN_PAGES];
	uint64_t writable = UINT64_MAX;	/* status bytes that can be written */
	unsigned char *status = NULL;
	int cls, ret, fd, k, locked, own, dev = -1, data, err;
	struct rs_verdict v;
	const char *why = NULL;

	own = !child && rs_ok && !pick(s, 4);
	if (own) {
		uint64_t off = pick(s, OWN_PAGES);

		own_refresh(w, 0);
		in.addr = (uintptr_t)w->own + off * page_size;
		in.npages = 1 + pick(s, OWN_PAGES - off);
		cls = A_USER;
	} else if (pick(s, 2)) {
		in.addr = random_addr(s, &cls);
		in.npages = random_npages(s, in.addr);
	} else {	/* a range of the arena, where most calls can work */
		char *p;
		size_t len;

		arena_range(s, &p, &len);
		in.addr = (uintptr_t)p;
		in.npages = len / page_size;
		cls = A_USER;
	}
	random_rs_request(s, &in);
	switch (pick(s, 8)) {
	case 0:
		in.status = 0;
		break;
	case 1:		/* read-only: EFAULT, nothing moved */
		in.status = (uintptr_t)w->scratch_ro;
		writable = 0;
		break;
	case 2:		/* the kernel's */
		if (own)
			goto own_status;
		in.status = 0xffff888000001000ULL;
		writable = 0;
		break;
	case 3:		/* runs into the PROT_NONE page after buf */
		if (own)
			goto own_status;
		in.status = (uintptr_t)buf + (BUF_PAGES - 1) * page_size;
		writable = page_size;
		break;
	default:	/* the thread's own, after the command, if it fits */
own_status:
		if (in.npages <= (uint64_t)page_size - RS_STATUS_OFF)
			status = (unsigned char *)w->scratch + RS_STATUS_OFF;
		in.status = status ? (uintptr_t)status : (uintptr_t)buf;
		writable = status ? page_size - RS_STATUS_OFF : BUF_PAGES * page_size;
		break;
	}
	data = pick(s, 2);
	if (own) {
		dev = dev_ids[pick(s, ndevices)];
		fd = w->own_fd[dev];
	} else {
		fd = pool_fd(s);
	}
	n = in.npages;
	if (status)
		memset(status, RS_SENTINEL, n);
	m = (struct hmm_rs_migrate *)w->scratch;
	*m = in;
	/*
	 * A move to a device, or with HMM_RS_REQ_THP to a node (a whole THP
	 * that gets no huge page there goes page by page), is the migration
	 * the fork-child bug needs.
	 */
	locked = (in.dst == HMM_RS_DST_DEVICE || in.dst == HMM_RS_DST_NODE) &&
		 !child && !kernel_bugs;
	/*
	 * RELEASE would move the own range's pages under the checks. Taken
	 * first, as fork takes them.
	 */
	if (own)
		evict_shared();
	if (locked)
		pthread_rwlock_rdlock(&fork_lock);
	if (own) {
		INC(sh->own_calls);
		if (hmm_rs_pages_nodes((char *)(uintptr_t)in.addr, n, page_size, before))
			before[0] = INT32_MIN;
	}
	begin(w, op_names[OP_RS_MIGRATE], HMM_RS_MIGRATE, in.addr, in.npages, fd);
	ret = ioctl(fd, HMM_RS_MIGRATE, m) ? -errno : 0;
	end(w);
	after[0] = INT32_MIN;
	if (own && before[0] != INT32_MIN &&
	    hmm_rs_pages_nodes((char *)(uintptr_t)in.addr, n, page_size, after))
		after[0] = INT32_MIN;
	if (locked)
		pthread_rwlock_unlock(&fork_lock);
	count(OP_RS_MIGRATE, ret);
	rs_judge(&in, dev, &v);
	if (in.dst == HMM_RS_DST_NODE && rs_ok) {
		INC(sh->node_calls);
		if (!ret)
			INC(sh->node_ok);
		if (ret == -ENODEV)
			INC(sh->node_enodev);
	}
	/* A pool file closed (or its number reused) under us. */
	if (!own && (ret == -EBADF || ret == -ENOTTY))
		goto out;
	err = -ret;
	if (ret && rs_ok) {
		int bad = v.einval || v.enodev;

		why = rs_refusal_wrong(&in, ret, &v, own, writable);
		if (why) {
			rs_violation(&in, dev, ret, why, ", EINVAL for: %s, ENODEV for: %s",
				     v.einval ?: "-", v.enodev ?: "-");
			why = NULL;
		}
		if (bad) {
			/* A refused request changes nothing. */
			if (memcmp(m, &in, sizeof(in)))
				why = "HMM_RS_MIGRATE: a refused request changed the command";
			else if (status && rs_status_written(status, n))
				why = "HMM_RS_MIGRATE: a refused request wrote the status array";
			if (why)
				rs_violation(&in, dev, ret, why, NULL);
			if (own)
				own_check(&in, dev, ret, 1, NULL, before, after);
		} else if (own && err == EFAULT && !writable) {
			/* The status array cannot be filled: nothing moves. */
			own_check(&in, dev, ret, 1, NULL, before, after);
		}
		goto out;
	}
	if (ret)
		goto out;
	if (v.einval || v.enodev)
		why = "HMM_RS_MIGRATE: a malformed request accepted";
	else if (n > writable)
		why = "HMM_RS_MIGRATE: unwritable status array accepted";
	else if (cls == A_NOMAP)
		why = "HMM_RS_MIGRATE: migration where nothing is mapped";
	if (why) {
		rs_violation(&in, dev, ret, why, ": %s", v.einval ?: v.enodev ?: "-");
		goto out;
	}
	i = n;
	for (k = 0; k < HMM_RS_NR_REASONS; k++)
		sum += m->counts[k];
	if (sum != n || m->migrated != m->counts[HMM_RS_MIGRATED])
		why = "HMM_RS_MIGRATE: counts do not add up";
	else if (m->counts[HMM_RS_ON_NODE] && !(in.flags & HMM_RS_REQ_NOT_ON_NODE))
		why = "HMM_RS_MIGRATE: ON_NODE without HMM_RS_REQ_NOT_ON_NODE";
	else if (m->counts[HMM_RS_ON_NODE + 1] || m->counts[HMM_RS_ON_NODE + 2])
		why = "HMM_RS_MIGRATE: pages counted for no reason";
	if (in.dst == HMM_RS_DST_NODE) {
		__atomic_fetch_add(&sh->node_moved, m->migrated, __ATOMIC_RELAXED);
		__atomic_fetch_add(&sh->node_kept, m->counts[HMM_RS_ON_NODE],
				   __ATOMIC_RELAXED);
	}
	if (!why && status) {
		for (i = 0; i < n; i++) {
			k = status[i] & HMM_RS_STATUS_REASON;
			if (k > HMM_RS_ON_NODE) {
				why = "HMM_RS_MIGRATE: a status byte with no reason";
				break;
			}
			if (status[i] & HMM_RS_STATUS_WHOLE && !(in.flags & HMM_RS_REQ_THP) &&
			    k != HMM_RS_ON_NODE) {
				why = "HMM_RS_MIGRATE: WHOLE without HMM_RS_REQ_THP (or ON_NODE)";
				break;
			}
			counts[k]++;
		}
		for (k = 0; !why && k < HMM_RS_NR_REASONS; k++)
			if (counts[k] != m->counts[k])
				why = "HMM_RS_MIGRATE: status bytes disagree with counts";
	}
	if (why) {
		rs_violation(&in, dev, ret, why, status && i < n ?
			     ", page %llu: %#x" : NULL, (unsigned long long)i,
			     status && i < n ? status[i] : 0);
		goto out;
	}
	if (own)
		own_check(&in, dev, ret, 0, status, before, after);
out:
	if (own) {
		if (data)
			own_data(w, &in, dev, ret);
		evict_unlock();
	}
}

/* mmap of the device: random arguments; an ioctl and a CPU access on it. */
static void fuzz_mmap(struct worker *w)
{
	static const int flags[] = {
		MAP_SHARED, MAP_SHARED, MAP_PRIVATE, MAP_SHARED | MAP_POPULATE,
		MAP_PRIVATE | MAP_POPULATE, MAP_SHARED | MAP_LOCKED,
		MAP_PRIVATE | MAP_NORESERVE, MAP_SHARED | MAP_HUGETLB,
		MAP_SHARED_VALIDATE | MAP_SYNC, MAP_SHARED_VALIDATE | 0x800000,
		MAP_SHARED | MAP_ANONYMOUS,
	};
	uint64_t *s = &w->rng;
	uint64_t len, off;
	int fd = pool_fd(s), prot = pick(s, 8);
	char *p;

	switch (pick(s, 12)) {
	case 0:
		len = 0;
		break;
	case 1:
		len = 1 + pick(s, 2 * page_size);
		break;
	case 2:
		len = (1 + pick(s, 1024)) * page_size;
		break;
	case 3:	/* more than the address space */
		len = 1ULL << (48 + pick(s, 16));
		break;
	case 4:
		len = -(uint64_t)page_size;
		break;
	default:
		len = (1 + pick(s, 16)) * page_size;
		break;
	}
	switch (pick(s, 8)) {
	case 0:
		off = 1 + pick(s, page_size - 1);
		break;
	case 1:	/* overflows with the length */
		off = -(uint64_t)page_size * (1 + pick(s, 4));
		break;
	case 2:
		off = pick(s, 1ULL << 40) * page_size;
		break;
	default:
		off = 0;
		break;
	}
	evict_shared();
	begin(w, "mmap(device)", 0, len, off, fd);
	p = mmap(NULL, len, prot, flags[pick(s, ARRAY_SIZE(flags))], fd, off);
	end(w);
	count(OP_DEVMMAP, p == MAP_FAILED ? errno : 0);
	if (p != MAP_FAILED) {
		struct hmm_dmirror_cmd *cmd = (struct hmm_dmirror_cmd *)w->scratch;
		int c = pick(s, NCMDS);

		/* Not a range a migration can take: no lock needed. */
		if (c == OP_RELEASE || c == OP_MIGRATE_TO_DEV)
			c = OP_READ;
		cmd->addr = (uintptr_t)p;
		cmd->npages = (len + page_size - 1) / page_size;
		cmd->ptr = (uintptr_t)buf;
		if (cmd->npages > BUF_PAGES)
			cmd->npages = BUF_PAGES;
		fd = pool_fd(s);
		begin(w, op_names[c], cmds[c], cmd->addr, cmd->npages, fd);
		count(c, ioctl(fd, cmds[c], cmd) ? errno : 0);
		end(w);
		if (pick(s, 2))
			count(OP_TOUCH, touch(p, len, pick(s, 2), 0x77));
		count(OP_MUNMAP, munmap(p, len) ? errno : 0);
	}
	evict_unlock();
}

/* A file of the pool replaced by a new one, the old one closed. */
static void fuzz_close(struct worker *w)
{
	uint64_t *s = &w->rng;
	const char *dev = devices[pick(s, ndevices)];
	int slot = pick(s, NPOOL), fd, old;

	begin(w, "open", 0, 0, 0, -1);
	fd = open(dev, O_RDWR);
	end(w);
	count(OP_REOPEN, fd < 0 ? errno : 0);
	if (fd < 0)
		return;
	old = __atomic_exchange_n(&pool[slot], fd, __ATOMIC_ACQ_REL);
	begin(w, "close", 0, 0, 0, old);
	count(OP_CLOSE, close(old) ? errno : 0);
	end(w);
}

static void *fuzzer(void *arg)
{
	struct worker *w = arg;

	w->st->tid = gettid();
	while (!LOAD(stop)) {
		unsigned long n = INC(issued);
		int k;

		if (calls && n >= calls)
			break;
		k = pick(&w->rng, 1000);
		if (k < 3)
			fuzz_close(w);
		else if (k < 23)
			fuzz_mmap(w);
		else if (k < 83)
			fuzz_rs_migrate(w, 0);
		else
			fuzz_ioctl(w, 0);
		INC(finished);
	}
	return NULL;
}

/* A random range of the arena: within a region, or across some. */
static void arena_range(uint64_t *s, char **p, size_t *len)
{
	int r = pick(s, NREGIONS);
	size_t off, n;

	if (!pick(s, 6)) {
		off = pick(s, arena_size / page_size);
		n = 1 + pick(s, 128);
	} else if (r == K_HUGETLB || (r == K_THP && pick(s, 2))) {
		/* Whole huge pages, mostly. */
		off = region_off[r] / page_size +
			pick(s, region_size[r] / HPAGE) * (HPAGE / page_size);
		n = (1 + pick(s, region_size[r] / HPAGE)) * (HPAGE / page_size);
		if (!pick(s, 8))
			off += 1 + pick(s, 16);
	} else {
		off = region_off[r] / page_size + pick(s, region_size[r] / page_size);
		n = 1 + pick(s, region_size[r] / page_size);
	}
	if (off + n > arena_size / page_size)
		n = arena_size / page_size - off;
	*p = arena + off * page_size;
	*len = n * page_size;
}

/* Maps region @r afresh, as setup made it. Returns 0 or an errno. */
static int map_region(int r, int fd_dev)
{
	char *p = arena + region_off[r];
	size_t len = region_size[r];
	int anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
	/* Without hugetlbfs, its region is THP too. */
	int kind = r == K_HUGETLB && !hugetlb_ok ? K_THP : r;
	char *q;

	switch (kind) {
	case K_THP:
	case K_ANON_RW:
	case K_ANON_RO:
		q = mmap(p, len, PROT_READ | PROT_WRITE, anon, -1, 0);
		if (q == MAP_FAILED)
			break;
		if (kind == K_THP)
			madvise(p, len, MADV_HUGEPAGE);
		touch(p, len, 1, r + 1);
		if (kind == K_ANON_RO)
			mprotect(p, len, PROT_READ);
		return 0;
	case K_ANON_NONE:
		q = mmap(p, len, PROT_NONE, anon, -1, 0);
		break;
	case K_HOLE:
		return munmap(p, len) ? errno : 0;
	case K_DEVMAP:
		q = mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 fd_dev, 0);
		break;
	default:
		q = mmap(p, len, PROT_READ | PROT_WRITE,
			 (r == K_TMPFILE || r == K_RAMFS_PRIVATE ? MAP_PRIVATE :
			  MAP_SHARED) | MAP_FIXED, region_fd[r], 0);
		break;
	}
	return q == MAP_FAILED ? errno : 0;
}

/* The child of a fork: a few operations on the same ranges, then exit. */
static void child(struct worker *w)
{
	uint64_t *s = &w->rng;
	int n = 1 + pick(s, 8), own = -1, i;
	struct hmm_dmirror_cmd *cmd = (struct hmm_dmirror_cmd *)w->scratch;
	size_t len;
	char *p;

	w->st = &sh->st[SLOT_CHILD];
	w->st->tid = getpid();
	w->st->dev[0] = 0;
	/*
	 * A THP mapped by a PMD in two processes breaks the kernel's
	 * migration to the device page by page (the parent's PMD migration
	 * entry outlives the split of the folio: an Oops in
	 * remove_migration_pmd() or __rmap_walk_file(), with test_hmm too).
	 * Split the child's PMDs (zap one page of each) before any
	 * migration runs, unless asked to show that bug.
	 */
	if (!kernel_bugs) {
		char *a;

		for (a = arena; a < arena + arena_size; a += HPAGE)
			madvise(a, page_size, MADV_DONTNEED);
	}
	STORE(sh->child_ready, 1);
	for (i = 0; i < n; i++) {
		INC(sh->child_calls);
		switch (pick(s, 8)) {
		case 0:
		case 1:
		case 2:
			fuzz_ioctl(w, 1);
			break;
		case 3:
			fuzz_rs_migrate(w, 1);
			break;
		case 4:
		case 5:
			arena_range(s, &p, &len);
			begin(w, "cpu access", 0, (uintptr_t)p, len / page_size, -1);
			count(OP_TOUCH, touch(p, len, pick(s, 2), 0x33));
			break;
		case 6:	/* a file that mirrors the child */
			if (own < 0) {
				const char *dev = devices[pick(s, ndevices)];

				own = open(dev, O_RDWR);
				strncpy(w->st->dev, dev + strlen("/dev/"),
					sizeof(w->st->dev) - 1);
			}
			arena_range(s, &p, &len);
			cmd->addr = (uintptr_t)p;
			cmd->npages = len / page_size;
			cmd->ptr = (uintptr_t)buf;
			if (cmd->npages > BUF_PAGES)
				cmd->npages = BUF_PAGES;
			begin(w, "own MIGRATE_TO_DEV", HMM_DMIRROR_MIGRATE_TO_DEV,
			      cmd->addr, cmd->npages, own);
			count(OP_MIGRATE_TO_DEV, ioctl(own, HMM_DMIRROR_MIGRATE_TO_DEV, cmd) ?
			      errno : 0);
			begin(w, "cpu access", 0, (uintptr_t)p, len / page_size, -1);
			count(OP_TOUCH, touch(p, len, pick(s, 2), 0x44));
			break;
		default:
			arena_range(s, &p, &len);
			begin(w, "madvise", MADV_DONTNEED, (uintptr_t)p, len / page_size, -1);
			count(OP_MADVISE, madvise(p, len, MADV_DONTNEED) ? errno : 0);
			break;
		}
	}
	_exit(0);
}

static void do_fork(struct worker *w)
{
	int status, reaped = 0;
	pid_t pid;

	evict_shared();
	if (!kernel_bugs)
		pthread_rwlock_wrlock(&fork_lock);
	begin(w, "fork", 0, 0, 0, -1);
	/* The child's generator: the parent's, one step on. */
	next(&w->rng);
	STORE(sh->child_ready, 0);
	pid = fork();
	if (pid == 0)
		child(w);
	if (pid < 0) {
		count(OP_FORK, errno);
		if (!kernel_bugs)
			pthread_rwlock_unlock(&fork_lock);
		goto out;
	}
	/* A child that does not end is the main thread's stall report. */
	while (!LOAD(sh->child_ready)) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			reaped = 1;
			break;
		}
		usleep(100);
	}
	if (!kernel_bugs)
		pthread_rwlock_unlock(&fork_lock);
	while (!reaped && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* A killed child leaves its operation open. */
	STORE(sh->st[SLOT_CHILD].since, 0LL);
	if (WIFSIGNALED(status)) {
		count(OP_FORK, R_SIGNAL);
		/* The first few: what it was doing. */
		if (INC(sh->killed_children) < 4)
			note("fork child %d killed by signal %d in %s req %#lx addr %#llx npages %#llx fd %d (own file: %s)\n",
			     pid, WTERMSIG(status), sh->st[SLOT_CHILD].what,
			     sh->st[SLOT_CHILD].req,
			     (unsigned long long)sh->st[SLOT_CHILD].addr,
			     (unsigned long long)sh->st[SLOT_CHILD].npages,
			     sh->st[SLOT_CHILD].fd,
			     sh->st[SLOT_CHILD].dev[0] ? sh->st[SLOT_CHILD].dev : "none");
	} else if (WEXITSTATUS(status)) {
		count(OP_FORK, R_EXIT);
	} else {
		count(OP_FORK, 0);
	}
	/* The child ran on a copy of the generator: skip what it drew. */
	next(&w->rng);
out:
	evict_unlock();
}

/* The mutating thread: changes the arena under the fuzzing threads. */
static void *mutator(void *arg)
{
	static const int advice[] = {
		MADV_DONTNEED, MADV_DONTNEED, MADV_DONTNEED, MADV_PAGEOUT,
		MADV_PAGEOUT, MADV_PAGEOUT, MADV_FREE, MADV_COLD, MADV_WILLNEED,
		MADV_REMOVE, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
		MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE, MADV_DONTFORK,
		MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK,
	};
	static const int prots[] = {
		PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE,
		PROT_READ | PROT_WRITE | PROT_EXEC,
	};
	struct worker *w = arg;
	uint64_t *s = &w->rng;
	int ret, fd;
	size_t len;
	char *p, *q;

	w->st->tid = gettid();
	while (!LOAD(stop)) {
		int k = pick(s, 100);

		arena_range(s, &p, &len);
		if (k < 25) {
			int a = advice[pick(s, ARRAY_SIZE(advice))];

			begin(w, "madvise", a, (uintptr_t)p, len / page_size, -1);
			count(OP_MADVISE, madvise(p, len, a) ? errno : 0);
		} else if (k < 37) {
			begin(w, "mprotect", 0, (uintptr_t)p, len / page_size, -1);
			count(OP_MPROTECT, mprotect(p, len, prots[pick(s, 4)]) ? errno : 0);
		} else if (k < 55) {
			begin(w, "cpu access", 0, (uintptr_t)p, len / page_size, -1);
			count(OP_TOUCH, touch(p, len, pick(s, 2), pick(s, 256)));
		} else if (k < 59) {
			evict_shared();
			begin(w, "munmap", 0, (uintptr_t)p, len / page_size, -1);
			count(OP_MUNMAP, munmap(p, len) ? errno : 0);
			evict_unlock();
		} else if (k < 66) {
			/* Over it: anonymous memory, a region's file, the device. */
			int r = pick(s, NREGIONS), how = pick(s, 3);

			fd = how == 0 ? -1 : how == 1 ? region_fd[r] : pool_fd(s);
			evict_shared();
			begin(w, "mmap(fixed)", how, (uintptr_t)p, len / page_size, fd);
			q = mmap(p, len, prots[pick(s, 4)],
				 (fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS :
				  pick(s, 2) ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED,
				 fd, region_fd[r] >= 0 && how == 1 ?
				 pick(s, region_size[r] / page_size) * page_size : 0);
			count(OP_MMAP, q == MAP_FAILED ? errno : 0);
			evict_unlock();
		} else if (k < 72) {
			int r = pick(s, NREGIONS);

			evict_shared();
			begin(w, "restore", r, (uintptr_t)arena + region_off[r],
			      region_size[r] / page_size, -1);
			if (region_fd[r] >= 0)
				ftruncate(region_fd[r], region_size[r]);
			count(OP_MMAP, map_region(r, pool_fd(s)));
			evict_unlock();
		} else if (k < 75) {
			size_t dst = pick(s, (arena_size - len) / page_size + 1) * page_size;
			int flags = MREMAP_MAYMOVE | MREMAP_FIXED;

			if (!pick(s, 4))
				flags |= MREMAP_DONTUNMAP;
			evict_shared();
			begin(w, "mremap", flags, (uintptr_t)p, len / page_size, -1);
			q = mremap(p, len, len, flags, arena + dst);
			count(OP_MREMAP, q == MAP_FAILED ? errno : 0);
			evict_unlock();
		} else if (k < 77) {
			static const int files[] = {
				K_MEMFD, K_TMPFILE, K_RAMFS_SHARED,
				K_RAMFS_PRIVATE, K_HUGETLB,
			};
			int r = files[pick(s, ARRAY_SIZE(files))];

			if (region_fd[r] < 0)
				continue;
			begin(w, "truncate", r, 0, 0, region_fd[r]);
			ret = ftruncate(region_fd[r],
					pick(s, region_size[r] / page_size) * page_size);
			count(OP_TRUNCATE, ret ? errno : 0);
			usleep(pick(s, 500));
			ftruncate(region_fd[r], region_size[r]);
		} else if (k < 81) {
			do_fork(w);
		} else {
			usleep(pick(s, 500));
			continue;
		}
		end(w);
		/* Paced: the fuzzing threads need the CPUs more. */
		usleep(pick(s, 200));
	}
	return NULL;
}

/* [vdso], [vvar], [vvar_vclock], from /proc/self/maps. */
static void find_specials(void)
{
	static const char *const names[] = { "[vdso]", "[vvar]", "[vvar_vclock]" };
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		unsigned int i;

		if (sscanf(line, "%lx-%lx", &a, &b) != 2)
			continue;
		for (i = 0; i < ARRAY_SIZE(names); i++) {
			size_t n = strlen(names[i]);
			char *nl = strchr(line, '\n');

			if (nl)
				*nl = 0;
			if (strlen(line) >= n && !strcmp(line + strlen(line) - n, names[i]) &&
			    nspecials < (int)ARRAY_SIZE(specials)) {
				specials[nspecials].name = names[i];
				specials[nspecials].start = a;
				specials[nspecials].size = b - a;
				nspecials++;
			}
		}
	}
	if (f)
		fclose(f);
}

/*
 * A memory BAR of a display device (sysfs resource file), mapped read-only:
 * VM_IO | VM_PFNMAP. The fuzzer never touches it with the CPU; the
 * devices' hmm_range_fault() must not either.
 */
static void find_pci_bar(void)
{
	glob_t g;
	size_t i;

	if (glob("/sys/bus/pci/devices/*/class", 0, NULL, &g))
		return;
	for (i = 0; i < g.gl_pathc && nspecials < (int)ARRAY_SIZE(specials); i++) {
		char path[300], cls[32] = "";
		struct stat st;
		FILE *f = fopen(g.gl_pathv[i], "r");
		void *p;
		int fd;

		if (!f)
			continue;
		if (!fgets(cls, sizeof(cls), f))
			cls[0] = 0;
		fclose(f);
		if (strncmp(cls, "0x03", 4))
			continue;
		snprintf(path, sizeof(path), "%.*s/resource0",
			 (int)(strlen(g.gl_pathv[i]) - strlen("/class")), g.gl_pathv[i]);
		fd = open(path, O_RDONLY);
		if (fd < 0 || fstat(fd, &st) || st.st_size < page_size) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (st.st_size > 64 * page_size)
			st.st_size = 64 * page_size;
		p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		close(fd);
		if (p == MAP_FAILED)
			continue;
		specials[nspecials].name = "pci-bar";
		specials[nspecials].start = (uintptr_t)p;
		specials[nspecials].size = st.st_size;
		nspecials++;
		ksft_print_msg("PCI BAR: %s\n", path);
		break;
	}
	globfree(&g);
}

/* A file of @size bytes, unlinked, filled with @val. */
static int make_file(const char *dir, size_t size, int val)
{
	char path[256];
	char *page = buf;
	size_t off;
	int fd;

	snprintf(path, sizeof(path), "%s/hmm-rs-fuzz.XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	memset(page, val, page_size);
	for (off = 0; off < size; off += page_size)
		if (pwrite(fd, page, page_size, off) != page_size)
			break;
	if (ftruncate(fd, size)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A ramfs, mounted just long enough to create a file on it. */
static int ramfs_file(size_t size)
{
	char dir[64];
	int fd;

	snprintf(dir, sizeof(dir), "/tmp/hmm-rs-fuzz-ramfs.%d", getpid());
	if (mkdir(dir, 0700))
		return -1;
	if (mount("ramfs", dir, "ramfs", 0, NULL)) {
		rmdir(dir);
		return -1;
	}
	fd = make_file(dir, size, 0x5c);
	/* Lazy: it lives on as long as the file is open. */
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	return fd;
}

static int setup_arena(void)
{
	size_t off = 0, reserve;
	char *base;
	int r, ramfs;

	for (r = 0; r < NREGIONS; r++) {
		region_off[r] = off;
		region_size[r] = region_pages[r] * page_size;
		off += region_size[r];
		region_fd[r] = -1;
	}
	arena_size = off;
	/*
	 * Guard pages (PROT_NONE, never changed) on both sides, so that no
	 * range that starts in the arena and runs past it reaches memory of
	 * the fuzzer's own: a WRITE stops there.
	 */
	reserve = arena_size + 3 * HPAGE;
	base = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return -1;
	arena = (char *)(((uintptr_t)base + 2 * HPAGE - 1) & ~(HPAGE - 1));

	region_fd[K_MEMFD] = memfd_create("hmm-rs-fuzz", 0);
	if (region_fd[K_MEMFD] < 0 || ftruncate(region_fd[K_MEMFD], region_size[K_MEMFD]))
		return -1;
	region_fd[K_TMPFILE] = make_file("/tmp", region_size[K_TMPFILE], 0x3a);
	/* One file for both ramfs regions. */
	ramfs = ramfs_file(region_size[K_RAMFS_SHARED]);
	if (ramfs < 0) {
		ksft_print_msg("no ramfs (%s): a file in /tmp instead\n", strerror(errno));
		ramfs = make_file("/tmp", region_size[K_RAMFS_SHARED], 0x5c);
	}
	region_fd[K_RAMFS_SHARED] = ramfs;
	region_fd[K_RAMFS_PRIVATE] = dup(ramfs);
	region_fd[K_HUGETLB] = open("/dev/hugepages", O_RDWR | O_TMPFILE, 0600);
	if (region_fd[K_HUGETLB] < 0) {
		char path[] = "/dev/hugepages/hmm-rs-fuzz.XXXXXX";

		region_fd[K_HUGETLB] = mkstemp(path);
		if (region_fd[K_HUGETLB] >= 0)
			unlink(path);
	}
	if (region_fd[K_HUGETLB] >= 0 &&
	    !ftruncate(region_fd[K_HUGETLB], region_size[K_HUGETLB]) &&
	    mmap(arena + region_off[K_HUGETLB], region_size[K_HUGETLB],
		 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 region_fd[K_HUGETLB], 0) != MAP_FAILED) {
		hugetlb_ok = 1;
	} else {
		ksft_print_msg("no hugetlbfs (%s): anonymous memory instead\n",
			       strerror(errno));
		if (region_fd[K_HUGETLB] >= 0)
			close(region_fd[K_HUGETLB]);
		region_fd[K_HUGETLB] = -1;
	}
	if (region_fd[K_TMPFILE] < 0 || region_fd[K_RAMFS_SHARED] < 0 ||
	    region_fd[K_RAMFS_PRIVATE] < 0)
		return -1;
	for (r = 0; r < NREGIONS; r++) {
		int err = map_region(r, pool[0]);

		if (err) {
			errno = err;
			ksft_print_msg("region %s: %s\n", region_names[r], strerror(err));
			return -1;
		}
	}
	if (hugetlb_ok)
		touch(arena + region_off[K_HUGETLB], region_size[K_HUGETLB], 1, 9);
	return 0;
}

static int setup_worker(struct worker *w, int id, uint64_t seed)
{
	int fd = memfd_create("hmm-rs-fuzz-cmd", 0), i;

	w->id = id;
	w->rng = thread_seed(seed, id);
	w->st = &sh->st[id == nthreads ? SLOT_MUTATOR : id];
	if (fd < 0 || ftruncate(fd, page_size))
		return -1;
	w->scratch = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	w->scratch_ro = mmap(NULL, 2 * page_size, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->scratch == MAP_FAILED || w->scratch_ro == MAP_FAILED ||
	    mmap(w->scratch, page_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
	    mmap(w->scratch_ro, page_size, PROT_READ, MAP_SHARED | MAP_FIXED,
		 fd, 0) == MAP_FAILED ||
	    mprotect(w->scratch + page_size, page_size, PROT_NONE))
		return -1;
	close(fd);
	w->own = mmap(NULL, OWN_PAGES * page_size, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	w->own_model = calloc(OWN_PAGES, page_size);
	if (w->own == MAP_FAILED || !w->own_model ||
	    madvise(w->own, OWN_PAGES * page_size, MADV_NOHUGEPAGE))
		return -1;
	for (i = 0; i < 4; i++)
		w->own_fd[i] = -1;
	for (i = 0; i < ndevices; i++) {
		w->own_fd[dev_ids[i]] = open(devices[i], O_RDWR);
		if (w->own_fd[dev_ids[i]] < 0)
			return -1;
	}
	/* Most of it with contents, the rest never touched. */
	for (i = 0; i < 4; i++)
		own_refresh(w, 1);
	return 0;
}

static void print_file(const char *path, const char *prefix)
{
	FILE *f = fopen(path, "r");
	char line[256];

	while (f && fgets(line, sizeof(line), f))
		ksft_print_msg("%s%s", prefix, line);
	if (f)
		fclose(f);
}

static void print_counts(void)
{
	int op, e;

	for (op = 0; op < NOPS; op++) {
		char line[1024];
		int n = 0;

		for (e = 0; e < NRES; e++) {
			unsigned long c = sh->counts[op][e];
			const char *name;

			if (!c)
				continue;
			switch (e) {
			case 0:
				name = "ok";
				break;
			case R_SEGV:
				name = "SIGSEGV";
				break;
			case R_BUS:
				name = "SIGBUS";
				break;
			case R_SIGNAL:
				name = "killed";
				break;
			case R_EXIT:
				name = "exit!=0";
				break;
			case R_BIG:
				name = "errno>140";
				break;
			default:
				name = strerrorname_np(e) ?: "E?";
				break;
			}
			n += snprintf(line + n, sizeof(line) - n, " %s=%lu", name, c);
			if (n >= (int)sizeof(line))
				break;
		}
		if (n)
			ksft_print_msg("%-16s%7.1f s %s\n", op_names[op],
				       sh->usecs[op] / 1e6, line);
	}
}

static const char *const case_names[] = {
	"fuzz.invalid_calls_fail", "fuzz.children_exited", "fuzz.devices_work",
	"fuzz.no_stall",
};

/* A TAP result, counted for the watchdog. */
static void result(int pass, int i)
{
	ksft_test_result(pass, "%s\n", case_names[i]);
	fflush(stdout);
	INC(sh->reported);
}

static const char *slot_name(int i)
{
	static char name[16];

	if (i == SLOT_MUTATOR)
		return "mutator";
	if (i == SLOT_CHILD)
		return "fork child";
	if (i == SLOT_MAIN)
		return "main";
	snprintf(name, sizeof(name), "fuzzer %d", i);
	return name;
}

/*
 * The watchdog, a process of its own: a thread stuck in the kernel with
 * the fuzzer's mmap_lock (or one that died of an Oops holding it) leaves
 * every thread of the fuzzer that faults hung, the main thread included.
 * Once an operation takes stall_secs, or nothing ends for that long, it
 * prints what each thread does, with its kernel stack, the counts, and
 * the results left (failed), and kills the fuzzer.
 */
static void watchdog(pid_t parent)
{
	unsigned long last = 0;
	long long last_t = now_ms();

	for (;;) {
		long long t, oldest = 0;
		char path[64];
		glob_t g;
		size_t k;
		int i;

		usleep(200000);
		if (LOAD(sh->done) || getppid() != parent)
			_exit(0);
		t = now_ms();
		if (LOAD(sh->progress) != last) {
			last = LOAD(sh->progress);
			last_t = t;
		}
		for (i = 0; i < NSLOTS; i++) {
			long long since = LOAD(sh->st[i].since);

			if (since && (!oldest || since < oldest))
				oldest = since;
		}
		if ((!oldest || t - oldest < stall_secs * 1000) &&
		    t - last_t < stall_secs * 1000)
			continue;
		ksft_print_msg("stall: no operation ended for %.0f s%s\n",
			       (t - last_t) / 1000.0,
			       oldest ? ", busy threads:" : "");
		for (i = 0; i < NSLOTS; i++) {
			struct status *st = &sh->st[i];
			long long since = LOAD(st->since);

			if (!since)
				continue;
			ksft_print_msg("  %s (tid %d): %.1f s in %s req %#lx addr %#llx npages %#llx fd %d%s%s\n",
				       slot_name(i), st->tid, (t - since) / 1000.0,
				       st->what, st->req,
				       (unsigned long long)st->addr,
				       (unsigned long long)st->npages, st->fd,
				       st->dev[0] ? ", own file " : "", st->dev);
		}
		snprintf(path, sizeof(path), "/proc/%d/task/*/stack", parent);
		if (!glob(path, 0, NULL, &g)) {
			for (k = 0; k < g.gl_pathc; k++) {
				ksft_print_msg("kernel stack of %s:\n", g.gl_pathv[k]);
				print_file(g.gl_pathv[k], "  ");
			}
			globfree(&g);
		}
		if (LOAD(sh->st[SLOT_CHILD].since)) {
			snprintf(path, sizeof(path), "/proc/%d/stack",
				 sh->st[SLOT_CHILD].tid);
			ksft_print_msg("kernel stack of the fork child %d:\n",
				       sh->st[SLOT_CHILD].tid);
			print_file(path, "  ");
		}
		print_counts();
		for (i = LOAD(sh->reported); i < (int)ARRAY_SIZE(case_names); i++)
			ksft_test_result_fail("%s\n", case_names[i]);
		fflush(stdout);
		if (LOAD(sh->st[SLOT_CHILD].since))
			kill(sh->st[SLOT_CHILD].tid, SIGKILL);
		kill(parent, SIGKILL);
		_exit(1);
	}
}

/*
 * What each device does afterwards: READ sees what the CPU wrote, the CPU
 * sees what WRITE wrote, a migration to the device and back keeps it.
 */
static const char *device_works(const char *dev)
{
	size_t len = 4 * page_size, i;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *out = malloc(len);
	struct hmm_dmirror_cmd c;
	const char *bad = NULL;
	int fd = open(dev, O_RDWR);

	if (fd < 0 || p == MAP_FAILED || !out)
		return "setup failed";
	memset(p, 0x5a, len);
	if (hmm_rs_cmd(fd, HMM_DMIRROR_READ, (uintptr_t)p, out, 4, &c) ||
	    memcmp(p, out, len))
		bad = "READ";
	for (i = 0; !bad && i < len; i++)
		out[i] = i * 7;
	if (!bad && (hmm_rs_cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)p, out, 4, &c) ||
		     memcmp(p, out, len)))
		bad = "WRITE";
	if (!bad && (hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)p, buf, 4, &c) ||
		     memcmp(buf, out, len)))
		bad = "MIGRATE_TO_DEV";
	if (!bad && (hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)p, NULL, 4, &c) ||
		     memcmp(p, out, len)))
		bad = "MIGRATE_TO_SYS";
	close(fd);
	munmap(p, len);
	free(out);
	return bad;
}

/*
 * Whether @dev takes HMM_RS_MIGRATE: one page to the device (the C
 * test_hmm has no such ioctl: EINVAL).
 */
static int probe_rs_migrate(const char *dev)
{
	struct hmm_rs_migrate m = {
		.npages = 1,
		.select = HMM_RS_SELECT_SYSTEM,
		.dst = HMM_RS_DST_DEVICE,
	};
	char *page = mmap(NULL, page_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open(dev, O_RDWR), ok = 0;

	if (fd >= 0 && page != MAP_FAILED) {
		page[0] = 1;
		m.addr = (uintptr_t)page;
		ok = !ioctl(fd, HMM_RS_MIGRATE, &m) && m.migrated == 1;
	}
	if (page != MAP_FAILED)
		munmap(page, page_size);
	if (fd >= 0)
		close(fd);
	return ok;
}

int main(void)
{
	const char *env = getenv("HMM_RS_FUZZ_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	double secs = env_num("HMM_RS_FUZZ_SECS", 300), t0, t;
	pthread_rwlockattr_t ra;
	struct sigaction sa = {
		.sa_sigaction = fault_handler,
		.sa_flags = SA_SIGINFO | SA_NODEFER,
	};
	int i, joined = 0, done[MAX_THREADS + 1] = { 0 };
	int bad_children, devices_ok = 1, status;
	struct status *me;
	unsigned long v, nv;
	char line[256];
	pid_t dog;

	ksft_print_header();
	ksft_set_plan(4);
	calls = env_num("HMM_RS_FUZZ_CALLS", 100000);
	nthreads = env_num("HMM_RS_FUZZ_THREADS", 3);
	if (nthreads < 1 || nthreads > MAX_THREADS)
		nthreads = 3;
	stall_secs = env_num("HMM_RS_FUZZ_STALL_SECS", 60);
	huge = env_num("HMM_RS_FUZZ_HUGE", 1) != 0;
	kernel_bugs = getenv("HMM_RS_KERNEL_BUGS") && atoi(getenv("HMM_RS_KERNEL_BUGS"));
	note("seed %llu; replay (the same operations per thread; the threads race, so not the same interleaving): HMM_RS_FUZZ_SEED=%llu HMM_RS_FUZZ_CALLS=%lu HMM_RS_FUZZ_SECS=%g HMM_RS_FUZZ_THREADS=%d%s%s%s%s /tests/hmm_rs_fuzz\n",
	     (unsigned long long)seed, (unsigned long long)seed, calls, secs,
	     nthreads, huge ? "" : " HMM_RS_FUZZ_HUGE=0",
	     getenv("HMM_RS_FUZZ_DEVICES") ? " HMM_RS_FUZZ_DEVICES=" : "",
	     getenv("HMM_RS_FUZZ_DEVICES") ?: "",
	     kernel_bugs ? " HMM_RS_KERNEL_BUGS=1" : "");

	page_size = sysconf(_SC_PAGESIZE);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	buf = mmap(NULL, (BUF_PAGES + 1) * page_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || buf == MAP_FAILED ||
	    mprotect(buf + BUF_PAGES * page_size, page_size, PROT_NONE))
		ksft_exit_fail_msg("setup: %s\n", strerror(errno));
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&evict_lock, &ra);
	pthread_rwlock_init(&fork_lock, &ra);

	env = getenv("HMM_RS_FUZZ_DEVICES");
	for (i = 0; i < 4; i++) {
		static const char *const names[] = {
			"/dev/hmm_dmirror0", "/dev/hmm_dmirror1",
			"/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
		};
		int fd;

		if (env && !strchr(env, '0' + i))
			continue;
		fd = open(names[i], O_RDWR);
		if (fd >= 0) {
			dev_ids[ndevices] = i;
			devices[ndevices++] = names[i];
			close(fd);
		}
	}
	/* The devices are numbered from 0 up, without gaps. */
	for (i = 0; i < 8; i++) {
		snprintf(line, sizeof(line), "/dev/hmm_dmirror%d", i);
		if (access(line, F_OK))
			break;
	}
	nmod_devices = i;
	hmm_rs_memory_nodes(mem_nodes, sizeof(mem_nodes));
	rs_ok = probe_rs_migrate(devices[0]);
	if (!ndevices)
		ksft_exit_fail_msg("no /dev/hmm_dmirror*: %s\n", strerror(errno));
	for (i = 0; i < NPOOL; i++) {
		pool[i] = open(devices[i % ndevices], O_RDWR);
		if (pool[i] < 0)
			ksft_exit_fail_msg("open: %s\n", strerror(errno));
	}
	/*
	 * Everything the fuzzer maps for itself comes before the arena, whose
	 * holes are free for the taking: mmap(NULL) may land there, and then
	 * the mutator maps over it.
	 */
	for (i = 0; i <= nthreads; i++)
		if (setup_worker(&workers[i], i, seed))
			ksft_exit_fail_msg("setup: %s\n", strerror(errno));
	find_specials();
	find_pci_bar();
	if (setup_arena())
		ksft_exit_fail_msg("setup: %s\n", strerror(errno));
	line[0] = 0;
	for (i = 0; i < ndevices; i++)
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s",
			 devices[i] + strlen("/dev/"));
	snprintf(line + strlen(line), sizeof(line) - strlen(line),
		 "; arena %p, %zu KiB%s; special mappings:", arena,
		 arena_size >> 10, hugetlb_ok ? "" : " (no hugetlbfs)");
	for (i = 0; i < nspecials; i++)
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s",
			 specials[i].name);
	note("devices:%s\n", line);
	note("HMM_RS_MIGRATE: %s; the driver's devices: %d; nodes with memory: %s\n",
	     rs_ok ? "yes" : "no (not checked beyond what a success must have had)",
	     nmod_devices, mem_nodes);

	me = &sh->st[SLOT_MAIN];
	me->tid = getpid();
	dog = fork();
	if (dog < 0)
		ksft_exit_fail_msg("fork: %s\n", strerror(errno));
	if (!dog)
		watchdog(getppid());
	t0 = now();
	for (i = 0; i <= nthreads; i++)
		if (pthread_create(&workers[i].thread, NULL,
				   i == nthreads ? mutator : fuzzer, &workers[i]))
			ksft_exit_fail_msg("pthread_create\n");
	/* The fuzzing threads end on their own, then the mutator is stopped. */
	while (joined <= nthreads) {
		usleep(100000);
		if (now() - t0 > secs || joined == nthreads)
			STORE(stop, 1);
		for (i = 0; i <= nthreads; i++)
			if (!done[i] && (i < nthreads || joined == nthreads) &&
			    !pthread_tryjoin_np(workers[i].thread, NULL)) {
				done[i] = 1;
				joined++;
			}
	}
	t = now() - t0;

	ksft_print_msg("%lu calls by %d threads in %.1f s; mutator: %lu operations; fork children: %lu operations\n",
		       finished, nthreads, t,
		       workers[nthreads].ops, sh->child_calls);
	print_counts();
	if (rs_ok)
		ksft_print_msg("HMM_RS_MIGRATE to a node: %lu calls, %lu ok, %lu ENODEV; %lu pages moved, %lu left ON_NODE; own ranges: %lu calls, %lu placements and %lu contents checked\n",
			       sh->node_calls, sh->node_ok, sh->node_enodev,
			       sh->node_moved, sh->node_kept, sh->own_calls,
			       sh->own_placed, sh->own_data);

	nv = sh->nviolations;
	for (v = 0; v < nv && v < ARRAY_SIZE(sh->violations); v++) {
		struct violation *x = &sh->violations[v];

		ksft_print_msg("violation: %s: %s req %#lx addr %#llx npages %#llx ptr %#llx command %s -> %s, cpages %llu%s\n",
			       x->why, op_names[x->op], x->req,
			       (unsigned long long)x->addr,
			       (unsigned long long)x->npages,
			       (unsigned long long)x->ptr, arg_names[x->arg],
			       x->ret ? strerrorname_np(-x->ret) ?: "E?" : "ok",
			       (unsigned long long)x->cpages, x->detail);
	}
	if (nv)
		ksft_print_msg("%lu violation(s)\n", nv);
	result(!nv, 0);

	bad_children = sh->counts[OP_FORK][R_SIGNAL] + sh->counts[OP_FORK][R_EXIT];
	if (bad_children)
		ksft_print_msg("%d fork child(ren) killed or failed\n", bad_children);
	result(!bad_children, 1);

	for (i = 0; i < ndevices; i++) {
		const char *bad;

		begin_st(me, "device check", 0, 0, 0, -1);
		bad = device_works(devices[i]);
		end_st(me);
		if (bad) {
			ksft_print_msg("%s afterwards: %s failed\n", devices[i], bad);
			devices_ok = 0;
		}
	}
	result(devices_ok, 2);
	begin_st(me, "close", 0, 0, 0, -1);
	for (i = 0; i < NPOOL; i++)
		close(pool[i]);
	end_st(me);
	/* The watchdog would have killed us on a stall. */
	STORE(sh->done, 1);
	waitpid(dog, &status, 0);
	result(1, 3);
	ksft_finished();
}
