// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs safety kselftests: regression tests for soundness defects found in
 * rust_test_hmm (each failed on commit 393cc7e, before the fixes; see
 * scripts/plans/safety-old). Runs with the module loaded; see
 * scripts/plans/check. What each guards:
 *
 * overflow.*: an ioctl on a range that ends at or just below 2^64 (addr
 *   2^64 - k pages for k in 1, 2, 63, 64, 65, 512; npages 1, k - 1 and k)
 *   returns 0 or an errno and the caller lives: no arithmetic overflow
 *   (a Rust panic, a kernel BUG that kills the caller). Each call runs in
 *   a child of its own, so a crash is one line of the report.
 *
 * exclusive_race.*: HMM_DMIRROR_EXCLUSIVE racing MADV_DONTNEED of the same
 *   pages must not leave a device page table entry for a page the CPU no
 *   longer maps: a READ through the device afterwards sees what the CPU
 *   sees, zeroes. A non-zero byte is a stale entry (the page behind it is
 *   freed: a use after free). Through one open file, and through two
 *   files of the same device converting concurrently.
 *
 * killable.*: SIGKILL ends, within a second, a child inside a huge READ,
 *   READ_UNLOCKED, WRITE, CHECK_EXCLUSIVE or MIGRATE_TO_DEV ioctl or a huge
 *   mmap() of the device, and the device still works afterwards (the
 *   module must still unload after the suite: scripts/guest-init.sh
 *   checks that). READ and READ_UNLOCKED cover 16 GiB of PROT_READ memory
 *   (small pages), CHECK_EXCLUSIVE 2^40 pages; WRITE and mmap() half the
 *   free memory, since they populate it (more would bring the OOM killer);
 *   MIGRATE_TO_DEV a sparse shared memfd (128 to 256 GiB, so that what
 *   follows its migration loop takes about 2.5 s), which it migrates none
 *   of; the kill comes once that loop, which checks for signals, is done,
 *   in the snapshot of the range that follows it.
 *
 * release_race: HMM_DMIRROR_RELEASE in a loop against migrations to and
 *   from the device: neither side gets stuck (a watchdog reports a thread
 *   stuck in the kernel instead of hanging), and no data is lost.
 *
 * thp_zap_race.*: a 2 MiB THP on the device (device-private, mapped by a
 *   PMD) is brought back by MIGRATE_TO_SYS, a CPU fault or RELEASE while
 *   another thread zaps it with MADV_DONTNEED: no splat, and the device
 *   then sees zeroes. Stock 7.3's zap_huge_pmd() puts a folio reference
 *   for a PMD migration entry of a device-private folio, which holds none:
 *   collected whole, the THP was freed under the migration (an Oops in
 *   copy_back() on rust_test_hmm before MigrateVma::setup() stopped
 *   collecting device-private THPs whole). The fault (which cannot split
 *   the folio it faults on) and the eviction (migrate_device_range()
 *   unmaps to PMD entries itself) still hit it, and the fault a second
 *   bug: set_pmd_migration_entry() clears the device-private PMD for a
 *   moment, MADV_DONTNEED skips it, and the zapped data stays. Those two
 *   variants skip unless HMM_RS_KERNEL_BUGS is set (patches/README).
 *
 * thp_fork_zap.*: the same bug from another mm. A 2 MiB device THP is
 *   shared with a fork child (fork() copies the device PMD); the parent
 *   brings it back by MIGRATE_TO_SYS while the child zaps its own PMD by
 *   MADV_DONTNEED (over and over until the call returns), munmap() or
 *   exit, the moment its pagemap entry changes (to the migration entry
 *   that the parent's migration puts in every mm that maps the THP): no
 *   splat, the child lives, every page of the parent is back in system
 *   memory (pagemap and SNAPSHOT), and the parent, which zapped nothing,
 *   reads every byte of its pattern. MIGRATE_TO_SYS may move a device
 *   THP back whole (one PMD migration entry per mapping) only if no other
 *   mm maps it (anon_unshared() in rust/kernel/mm/migrate.rs): the
 *   child's zap of a PMD migration entry puts a reference it does not
 *   hold and frees the THP under the migration. Shared, it must be split,
 *   and PTE migration entries hold none. With anon_unshared() always
 *   true, every variant failed: on dbabf22 within 11 rounds (the parent's
 *   PMD stayed a migration entry of the freed THP, "BUG: Bad rss-counter
 *   state" at its exit), on 64d7022 with a NULL pointer Oops in
 *   copy_back().
 *
 * concurrent_write: two open files WRITE the same pages at once: no crash,
 *   and every byte afterwards is one of the two patterns. It guards against
 *   a crash only: 393cc7e passed it too.
 *
 * Time budgets, in seconds, from the environment: HMM_RS_RACE_SECS (10, each
 * exclusive_race, thp_zap_race and thp_fork_zap variant),
 * HMM_RS_RELEASE_SECS (15), HMM_RS_WRITE_SECS (3);
 * HMM_RS_KILL_WAIT_SECS (20): how long a killed child may take before it
 * counts as stuck in the kernel; HMM_RS_STUCK_SECS (30): how long past its
 * budget release_race waits before it reports a stuck thread. And
 * HMM_RS_RACE_PAGES (8): the pages exclusive_race converts per round.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hmm_rs.h"

#define DEVICE "/dev/hmm_dmirror0"
#define GIB (1ULL << 30)

/* ksft_print_msg(), flushed: a crash or a stuck child must not eat it. */
#define note(...) do {				\
	ksft_print_msg(__VA_ARGS__);		\
	fflush(stdout);				\
} while (0)

/*
 * Shared with other threads or processes: plain fields, atomic accesses
 * (the timestamps are only read after the flag that publishes them).
 */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)

/* @v at most @max; says so if it was more. */
static double clamp_budget(const char *name, double v, double max)
{
	if (v <= max)
		return v;
	note("%s=%.0f: clamped to %.0f s (the harness timeout)\n", name, v, max);
	return max;
}

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return s ? s : "E?";
}

/*
 * Waits up to @secs for child @pid to end; returns 1 with its wait status
 * in @status once reaped, 0 if it is still there.
 */
static int wait_child(pid_t pid, int *status, double secs)
{
	double end = now() + secs;
	struct pollfd p = { .events = POLLIN };
	int ret = 0;

	p.fd = syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		double left;

		if (waitpid(pid, status, WNOHANG) == pid) {
			ret = 1;
			break;
		}
		left = end - now();
		if (left <= 0)
			break;
		if (left > 0.05)
			left = 0.05;
		if (p.fd >= 0)
			poll(&p, 1, (int)(left * 1000) + 1);
		else
			usleep(left * 1e6);
	}
	if (p.fd >= 0)
		close(p.fd);
	return ret;
}

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
}

/*
 * The device still works: a new open file READs one page of ours. Returns
 * 0, a negative errno, or -EIO for wrong data.
 */
static int device_works(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	char *buf, *out;
	int fd, ret, i;

	fd = open(DEVICE, O_RDWR);
	if (fd < 0)
		return -errno;
	buf = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		ret = -errno;
		close(fd);
		return ret;
	}
	out = buf + ps;
	for (i = 0; i < ps; i++)
		buf[i] = 0x5a ^ i;
	ret = hmm_rs_cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, 1, NULL);
	if (!ret && memcmp(buf, out, ps))
		ret = -EIO;
	munmap(buf, 2 * ps);
	close(fd);
	return ret;
}

/* MemAvailable of /proc/meminfo in bytes, 0 if unknown. */
static uint64_t mem_available(void)
{
	unsigned long long kb = 0;
	char line[128];
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/* ---- overflow ---------------------------------------------------------- */

FIXTURE(overflow) {
	long page_size;
	char *buf;
};

FIXTURE_VARIANT(overflow) {
	unsigned long req;
};

FIXTURE_VARIANT_ADD(overflow, read) { .req = HMM_DMIRROR_READ };
FIXTURE_VARIANT_ADD(overflow, write) { .req = HMM_DMIRROR_WRITE };
FIXTURE_VARIANT_ADD(overflow, read_unlocked) { .req = HMM_DMIRROR_READ_UNLOCKED };
FIXTURE_VARIANT_ADD(overflow, snapshot) { .req = HMM_DMIRROR_SNAPSHOT };
FIXTURE_VARIANT_ADD(overflow, migrate_to_dev) { .req = HMM_DMIRROR_MIGRATE_TO_DEV };
FIXTURE_VARIANT_ADD(overflow, migrate_to_sys) { .req = HMM_DMIRROR_MIGRATE_TO_SYS };
FIXTURE_VARIANT_ADD(overflow, exclusive) { .req = HMM_DMIRROR_EXCLUSIVE };
FIXTURE_VARIANT_ADD(overflow, check_exclusive) { .req = HMM_DMIRROR_CHECK_EXCLUSIVE };

#define OVERFLOW_MAX_PAGES 512

FIXTURE_SETUP(overflow)
{
	self->page_size = sysconf(_SC_PAGESIZE);
	self->buf = mmap(NULL, OVERFLOW_MAX_PAGES * self->page_size,
			 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	memset(self->buf, 0x3c, OVERFLOW_MAX_PAGES * self->page_size);
}

FIXTURE_TEARDOWN(overflow)
{
	munmap(self->buf, OVERFLOW_MAX_PAGES * self->page_size);
}

/*
 * One ioctl in a child of its own, with a file it opened itself (a file
 * mirrors the address space of the process that opened it). Describes the
 * outcome in @out; returns 0 if the call returned, -1 if the child died or
 * got stuck.
 */
static int overflow_call(unsigned long req, uint64_t addr, uint64_t npages,
			 void *buf, char *out, size_t len)
{
	int status, fd, ret;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		snprintf(out, len, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		fd = open(DEVICE, O_RDWR);
		if (fd < 0)
			_exit(255);
		ret = hmm_rs_cmd(fd, req, addr, buf, npages, NULL);
		_exit(ret < 0 ? -ret : 0);
	}
	if (!wait_child(pid, &status, 30)) {
		kill(pid, SIGKILL);
		snprintf(out, len, "STUCK (not done after 30 s)");
		return -1;
	}
	if (WIFSIGNALED(status)) {
		snprintf(out, len, "DIED, signal %d (kernel oops?)",
			 WTERMSIG(status));
		return -1;
	}
	ret = WEXITSTATUS(status);
	if (ret == 255) {
		snprintf(out, len, "open " DEVICE " failed");
		return -1;
	}
	snprintf(out, len, "%s", ret ? errname(ret) : "0");
	return 0;
}

TEST_F_TIMEOUT(overflow, near_top_of_address_space, 120)
{
	static const uint64_t ks[] = { 1, 2, 63, 64, 65, OVERFLOW_MAX_PAGES };
	int calls = 0, bad = 0, ret;
	unsigned int i, j;

	for (i = 0; i < ARRAY_SIZE(ks); i++) {
		uint64_t k = ks[i], addr = -(k * self->page_size);
		uint64_t np[3] = { 1, k - 1, k };
		char line[512], res[96];
		int n;

		n = snprintf(line, sizeof(line), "addr=2^64-%llu pages:",
			     (unsigned long long)k);
		for (j = 0; j < 3; j++) {
			if (!np[j] || (j && np[j] == np[j - 1]) ||
			    (j == 2 && np[2] == np[0]))
				continue;
			ret = overflow_call(variant->req, addr, np[j],
					    self->buf, res, sizeof(res));
			calls++;
			if (ret)
				bad++;
			n += snprintf(line + n, sizeof(line) - n,
				      " npages=%llu -> %s;",
				      (unsigned long long)np[j], res);
		}
		note("%s\n", line);
	}
	ret = device_works();
	note("%d calls, %d died or stuck; afterwards a READ through a new file: %s\n",
	     calls, bad, ret ? errname(-ret) : "ok");
	EXPECT_EQ(0, ret);
	ASSERT_EQ(0, bad);
}

/* ---- exclusive_race ---------------------------------------------------- */

FIXTURE(exclusive_race) {
	long page_size;
	unsigned long npages;
	size_t len;
	char *buf;
	char *out;
	int fd[2];
};

FIXTURE_VARIANT(exclusive_race) {
	int nfiles;
};

FIXTURE_VARIANT_ADD(exclusive_race, one_file) { .nfiles = 1 };
FIXTURE_VARIANT_ADD(exclusive_race, two_files) { .nfiles = 2 };

/*
 * Pages per round (HMM_RS_RACE_PAGES, 1 to 64): the zap races with the
 * conversion of one page, whichever is in flight, so the odds per round do
 * not grow with the pages; few make rounds cheap.
 */
#define RACE_PAGES 8

FIXTURE_SETUP(exclusive_race)
{
	int i;

	self->page_size = sysconf(_SC_PAGESIZE);
	self->npages = env_num("HMM_RS_RACE_PAGES", RACE_PAGES);
	if (self->npages < 1 || self->npages > 64)
		self->npages = RACE_PAGES;
	self->len = self->npages * self->page_size;
	self->buf = mmap(NULL, self->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	/* Small pages only: a THP is not made exclusive page by page. */
	madvise(self->buf, self->len, MADV_NOHUGEPAGE);
	self->out = malloc(self->len);
	ASSERT_NE(NULL, self->out);
	for (i = 0; i < 2; i++) {
		self->fd[i] = open(DEVICE, O_RDWR);
		ASSERT_GE(self->fd[i], 0);
	}
}

FIXTURE_TEARDOWN(exclusive_race)
{
	close(self->fd[0]);
	close(self->fd[1]);
	free(self->out);
	munmap(self->buf, self->len);
}

struct xrace {
	int nconv;
	int *fd;
	char *buf;
	unsigned long npages;
	size_t len;
	pthread_barrier_t go, done;
	int stop;
	/* Set by each converting thread as it enters its ioctl. */
	int started[2];
	/* Per converting thread: EXCLUSIVE returned 0, EBUSY, ENOENT, other. */
	long results[2][4];
	int last_other[2];
};

struct xrace_arg {
	struct xrace *r;
	int i;
};

static void *xrace_convert(void *p)
{
	struct xrace_arg *a = p;
	struct xrace *r = a->r;
	char *bounce = malloc(r->len);
	int ret, slot;

	for (;;) {
		pthread_barrier_wait(&r->go);
		if (LOAD(r->stop))
			break;
		STORE(r->started[a->i], 1);
		ret = bounce ? hmm_rs_cmd(r->fd[a->i], HMM_DMIRROR_EXCLUSIVE,
					   (uintptr_t)r->buf, bounce,
					   r->npages, NULL) : -ENOMEM;
		slot = !ret ? 0 : ret == -EBUSY ? 1 : ret == -ENOENT ? 2 : 3;
		if (slot == 3)
			r->last_other[a->i] = -ret;
		r->results[a->i][slot]++;
		pthread_barrier_wait(&r->done);
	}
	free(bounce);
	return NULL;
}

static void spin_until(double t)
{
	while (now() < t)
		;
}

TEST_F_TIMEOUT(exclusive_race, exclusive_vs_dontneed, 120)
{
	double budget = clamp_budget("HMM_RS_RACE_SECS",
				     env_num("HMM_RS_RACE_SECS", 10), 90);
	long rounds = 0, stale_rounds = 0, stale_pages = 0, read_errors = 0;
	struct xrace_arg args[2];
	struct xrace r = {
		.nconv = variant->nfiles,
		.fd = self->fd,
		.buf = self->buf,
		.npages = self->npages,
		.len = self->len,
	};
	pthread_t th[2];
	double t0, t, jitter, start;
	int i, shown = 0;
	unsigned long p;

	/* How long one EXCLUSIVE takes: the zap lands anywhere inside it. */
	t0 = now();
	for (i = 0; i < 20; i++) {
		memset(self->buf, 1, self->len);
		hmm_rs_cmd(self->fd[0], HMM_DMIRROR_EXCLUSIVE,
			   (uintptr_t)self->buf, self->out, self->npages, NULL);
	}
	jitter = 1.2 * (now() - t0) / 20;
	srand48(getpid());

	ASSERT_EQ(0, pthread_barrier_init(&r.go, NULL, r.nconv + 1));
	ASSERT_EQ(0, pthread_barrier_init(&r.done, NULL, r.nconv + 1));
	for (i = 0; i < r.nconv; i++) {
		args[i].r = &r;
		args[i].i = i;
		ASSERT_EQ(0, pthread_create(&th[i], NULL, xrace_convert, &args[i]));
	}

	start = now();
	while (now() - start < budget) {
		unsigned char pat = 1 + rounds % 255;

		memset(self->buf, pat, self->len);
		for (i = 0; i < r.nconv; i++)
			STORE(r.started[i], 0);
		pthread_barrier_wait(&r.go);
		/*
		 * Time the zap from the moment the converting threads start,
		 * not from the barrier (their wake-up takes a while): it then
		 * lands anywhere in their ioctls.
		 */
		t = now() + 0.1;
		while ((!LOAD(r.started[0]) ||
			!LOAD(r.started[r.nconv - 1])) && now() < t)
			sched_yield();
		spin_until(now() + drand48() * jitter);
		madvise(self->buf, self->len, MADV_DONTNEED);
		pthread_barrier_wait(&r.done);
		rounds++;

		/* The CPU sees zeroes now; so must the device. */
		for (i = 0; i < variant->nfiles; i++) {
			int ret = hmm_rs_cmd(self->fd[i], HMM_DMIRROR_READ,
					      (uintptr_t)self->buf, self->out,
					      self->npages, NULL);
			long stale = 0;

			if (ret) {
				read_errors++;
				continue;
			}
			for (p = 0; p < self->npages; p++) {
				unsigned char *pg = (unsigned char *)self->out +
						    p * self->page_size;
				long b;

				for (b = 0; b < self->page_size && !pg[b]; b++)
					;
				if (b == self->page_size)
					continue;
				stale++;
				if (shown++ < 5)
					note("stale: round %ld, file %d, page %lu: byte %ld is 0x%02x (this round's pattern 0x%02x)\n",
					     rounds, i, p, b, pg[b], pat);
			}
			if (stale)
				stale_rounds++;
			stale_pages += stale;
		}
	}
	t = now() - start;
	STORE(r.stop, 1);
	pthread_barrier_wait(&r.go);
	for (i = 0; i < r.nconv; i++)
		pthread_join(th[i], NULL);

	note("%d converting file(s), %lu pages, zap jitter 0-%.0f us: %ld rounds in %.1f s (%.0f rounds/s)\n",
	     r.nconv, self->npages, jitter * 1e6, rounds, t, rounds / t);
	for (i = 0; i < r.nconv; i++)
		note("file %d EXCLUSIVE: %ld ok, %ld EBUSY, %ld ENOENT, %ld other (last %s)\n",
		     i, r.results[i][0], r.results[i][1], r.results[i][2],
		     r.results[i][3],
		     r.results[i][3] ? errname(r.last_other[i]) : "-");
	note("stale device entries: %ld round(s), %ld page(s); READ errors: %ld\n",
	     stale_rounds, stale_pages, read_errors);
	EXPECT_EQ(0, read_errors);
	ASSERT_EQ(0, stale_pages);
}

/* ---- thp_zap_race ------------------------------------------------------ */

FIXTURE(thp_zap_race) {
	int fd;
	size_t len;
	char *map;
	char *buf;
	char *out;
};

enum tz_back { TZ_MIGRATE_TO_SYS, TZ_CPU_FAULT, TZ_RELEASE };

FIXTURE_VARIANT(thp_zap_race) {
	/* What brings the device THP back while the zap comes. */
	enum tz_back back;
	const char *what;
};

FIXTURE_VARIANT_ADD(thp_zap_race, migrate_to_sys) {
	.back = TZ_MIGRATE_TO_SYS, .what = "MIGRATE_TO_SYS",
};

FIXTURE_VARIANT_ADD(thp_zap_race, cpu_fault) {
	.back = TZ_CPU_FAULT, .what = "CPU fault",
};

FIXTURE_VARIANT_ADD(thp_zap_race, release) {
	.back = TZ_RELEASE, .what = "RELEASE (eviction)",
};

FIXTURE_SETUP(thp_zap_race)
{
	self->len = 2UL << 20;
	self->fd = open(DEVICE, O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->map = mmap(NULL, 2 * self->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->map);
	self->buf = (char *)(((uintptr_t)self->map + self->len - 1) &
			     ~(self->len - 1));
	ASSERT_EQ(0, madvise(self->buf, self->len, MADV_HUGEPAGE));
	self->out = malloc(self->len);
	ASSERT_NE(NULL, self->out);
}

FIXTURE_TEARDOWN(thp_zap_race)
{
	free(self->out);
	munmap(self->map, 2 * self->len);
	close(self->fd);
}

struct tzrace {
	int fd;
	enum tz_back back;
	char *buf;
	size_t len;
	pthread_barrier_t go, done;
	int stop, started;
	long ok, err, last_err;
	long sum;
};

/* Brings the device THP at @buf back to system memory as @back says. */
static int tz_bring_back(int fd, enum tz_back back, char *buf, size_t len,
			 long *sum)
{
	switch (back) {
	case TZ_CPU_FAULT:
		/* One read faults the whole PMD-mapped folio back. */
		*sum += LOAD(buf[len - 1]);
		return 0;
	case TZ_RELEASE:
		return hmm_rs_cmd(fd, HMM_DMIRROR_RELEASE, (uintptr_t)buf, NULL,
				  len / sysconf(_SC_PAGESIZE), NULL);
	default:
		return hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)buf,
				  NULL, len / sysconf(_SC_PAGESIZE), NULL);
	}
}

static void *tzrace_back(void *p)
{
	struct tzrace *r = p;
	int ret;

	for (;;) {
		pthread_barrier_wait(&r->go);
		if (LOAD(r->stop))
			break;
		STORE(r->started, 1);
		ret = tz_bring_back(r->fd, r->back, r->buf, r->len, &r->sum);
		if (ret) {
			r->err++;
			r->last_err = -ret;
		} else {
			r->ok++;
		}
		pthread_barrier_wait(&r->done);
	}
	return NULL;
}

/*
 * Puts a 2 MiB THP on the device, mapped by a PMD (a device-private PMD
 * entry); returns 1 if it is, 0 if it went page by page, -errno.
 */
static int thp_to_device(int fd, char *buf, size_t len, char *out,
			 unsigned char pat)
{
	unsigned long npages = len / sysconf(_SC_PAGESIZE), i;
	struct hmm_dmirror_cmd c;
	int ret;

	memset(buf, pat, len);
	ret = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)buf, out,
			 npages, &c);
	if (ret)
		return ret;
	ret = hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, out,
			 npages, NULL);
	if (ret)
		return ret;
	for (i = 0; i < npages; i++)
		if (!(out[i] & HMM_DMIRROR_PROT_PMD))
			return 0;
	return 1;
}

TEST_F_TIMEOUT(thp_zap_race, vs_dontneed, 120)
{
	double budget = clamp_budget("HMM_RS_RACE_SECS",
				     env_num("HMM_RS_RACE_SECS", 10), 90);
	struct tzrace r = {
		.fd = self->fd,
		.back = variant->back,
		.buf = self->buf,
		.len = self->len,
	};
	long rounds = 0, pmd_rounds = 0, setup_errors = 0, bad_pages = 0;
	long ps = sysconf(_SC_PAGESIZE);
	double t0, t, jitter, start;
	pthread_t th;
	size_t b;
	int i, ret;

	if (variant->back == TZ_RELEASE && !env_num("HMM_RS_KERNEL_BUGS", 0))
		SKIP(return, "kernel bug: zap_huge_pmd() puts a reference for the PMD migration entry that migrate_device_range() leaves for a device-private THP, freeing it during the eviction; see patches/README");
	if (variant->back == TZ_CPU_FAULT && !env_num("HMM_RS_KERNEL_BUGS", 0))
		SKIP(return, "kernel bugs: set_pmd_migration_entry() clears a device-private PMD that MADV_DONTNEED then skips, and zap_huge_pmd() puts a reference the PMD migration entry does not hold; see patches/README");

	/* How long bringing one device THP back takes. */
	t0 = now();
	for (i = 0; i < 10; i++) {
		thp_to_device(self->fd, self->buf, self->len, self->out, 1);
		tz_bring_back(self->fd, variant->back, self->buf, self->len,
			      &r.sum);
	}
	jitter = 1.2 * (now() - t0) / 10;
	srand48(getpid());
	ASSERT_EQ(0, pthread_barrier_init(&r.go, NULL, 2));
	ASSERT_EQ(0, pthread_barrier_init(&r.done, NULL, 2));
	ASSERT_EQ(0, pthread_create(&th, NULL, tzrace_back, &r));

	start = now();
	while (now() - start < budget) {
		unsigned char pat = 1 + rounds % 255;

		ret = thp_to_device(self->fd, self->buf, self->len, self->out,
				    pat);
		if (ret < 0) {
			setup_errors++;
			continue;
		}
		pmd_rounds += ret;
		STORE(r.started, 0);
		pthread_barrier_wait(&r.go);
		t = now() + 0.1;
		while (!LOAD(r.started) && now() < t)
			sched_yield();
		spin_until(now() + drand48() * jitter);
		madvise(self->buf, self->len, MADV_DONTNEED);
		pthread_barrier_wait(&r.done);
		rounds++;

		/* Zapped: the CPU and the device see zeroes. */
		ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_READ,
				 (uintptr_t)self->buf, self->out,
				 self->len / ps, NULL);
		if (ret) {
			setup_errors++;
			continue;
		}
		for (b = 0; b < self->len; b += ps) {
			if (!self->out[b] && !memcmp(self->out + b,
						     self->out + b + 1,
						     ps - 1))
				continue;
			if (bad_pages++ < 5)
				note("round %ld: page %zu not zero after the zap (0x%02x; pattern 0x%02x)\n",
				     rounds, b / ps, (unsigned char)self->out[b],
				     pat);
		}
	}
	t = now() - start;
	STORE(r.stop, 1);
	pthread_barrier_wait(&r.go);
	pthread_join(th, NULL);

	note("%s vs MADV_DONTNEED: %ld rounds in %.1f s, %ld with the THP mapped by a device PMD; jitter 0-%.0f us\n",
	     variant->what, rounds, t,
	     pmd_rounds, jitter * 1e6);
	note("back: %ld ok, %ld failed (last %s); setup or READ errors %ld; non-zero pages %ld\n",
	     r.ok, r.err, r.err ? errname(r.last_err) : "-", setup_errors,
	     bad_pages);
	ASSERT_EQ(0, device_works());
	EXPECT_EQ(0, setup_errors);
	ASSERT_EQ(0, bad_pages);
}

/* ---- thp_fork_zap ------------------------------------------------------ */

FIXTURE(thp_fork_zap) {
	int fd;
	int pagemap;
	long ps;
	size_t len;
	char *map;
	char *buf;
	char *out;
	unsigned char *expect;
	/* Shared with each round's child. */
	struct tfz_shared {
		int ready, go, done;
		/* The child's pagemap entry of buf: at fork, and at its zap. */
		uint64_t before, seen;
		/* MADV_DONTNEED calls made before the parent's call returned. */
		long zaps_in_call;
	} *sh;
};

enum tfz_zap { TFZ_DONTNEED, TFZ_MUNMAP, TFZ_EXIT };

FIXTURE_VARIANT(thp_fork_zap) {
	/* How the fork child zaps its PMD of the shared device THP. */
	enum tfz_zap zap;
	const char *what;
};

FIXTURE_VARIANT_ADD(thp_fork_zap, dontneed) {
	.zap = TFZ_DONTNEED, .what = "MADV_DONTNEED",
};

FIXTURE_VARIANT_ADD(thp_fork_zap, munmap) {
	.zap = TFZ_MUNMAP, .what = "munmap()",
};

FIXTURE_VARIANT_ADD(thp_fork_zap, exit) {
	.zap = TFZ_EXIT, .what = "exit",
};

FIXTURE_SETUP(thp_fork_zap)
{
	self->ps = sysconf(_SC_PAGESIZE);
	self->len = 2UL << 20;
	self->fd = open(DEVICE, O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->map = mmap(NULL, 2 * self->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->map);
	self->buf = (char *)(((uintptr_t)self->map + self->len - 1) &
			     ~(self->len - 1));
	ASSERT_EQ(0, madvise(self->buf, self->len, MADV_HUGEPAGE));
	self->out = malloc(self->len);
	ASSERT_NE(NULL, self->out);
	self->expect = malloc(self->len);
	ASSERT_NE(NULL, self->expect);
	self->sh = mmap(NULL, sizeof(*self->sh), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->sh);
	self->pagemap = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_GE(self->pagemap, 0);
}

FIXTURE_TEARDOWN(thp_fork_zap)
{
	close(self->pagemap);
	munmap(self->sh, sizeof(*self->sh));
	free(self->expect);
	free(self->out);
	munmap(self->map, 2 * self->len);
	close(self->fd);
}

/* /proc/PID/pagemap (fs/proc/task_mmu.c): a swap entry, its type. */
#define PM_SWAP (1ULL << 62)
#define PM_PRESENT (1ULL << 63)
#define PM_SWAP_TYPE(e) ((e) & 0x1f)

/* The pagemap entries of @n pages at @addr into @e; 0 or -1. */
static int pagemap_entries(int fd, const void *addr, uint64_t *e, size_t n)
{
	off_t off = (uintptr_t)addr / sysconf(_SC_PAGESIZE) * sizeof(*e);
	size_t len = n * sizeof(*e);

	return fd >= 0 && pread(fd, e, len, off) == (ssize_t)len ? 0 : -1;
}

static uint64_t pagemap_entry(int fd, const void *addr)
{
	uint64_t e = 0;

	pagemap_entries(fd, addr, &e, 1);
	return e;
}

/*
 * Whether @seen, the child's entry when it zapped, is a migration entry:
 * a swap entry of another type than the device-private entry it had. As
 * root, pagemap shows the type; otherwise both read as 0.
 */
static int tfz_migration_entry(uint64_t before, uint64_t seen)
{
	return (before & PM_SWAP) && (seen & PM_SWAP) &&
	       PM_SWAP_TYPE(seen) != PM_SWAP_TYPE(before);
}

/*
 * The fork child: it maps the device THP by a PMD of its own. Once the
 * parent starts MIGRATE_TO_SYS, it watches its own pagemap entry of the
 * THP and zaps the moment the entry changes (a migration entry that the
 * parent's migration put there, if that migration unmaps this mm too),
 * or when the call is over; MADV_DONTNEED goes on until it is.
 */
static void tfz_child(enum tfz_zap zap, struct tfz_shared *sh, char *buf,
		      size_t len)
{
	int pm = open("/proc/self/pagemap", O_RDONLY);
	double end;
	uint64_t e;

	sh->before = pagemap_entry(pm, buf);
	STORE(sh->ready, 1);
	end = now() + 10;
	while (!LOAD(sh->go) && now() < end)
		;
	end = now() + 5;
	do {
		e = pagemap_entry(pm, buf);
	} while (e == sh->before && !LOAD(sh->done) && now() < end);
	sh->seen = e;
	switch (zap) {
	case TFZ_EXIT:
		_exit(0);
	case TFZ_MUNMAP:
		munmap(buf, len);
		break;
	case TFZ_DONTNEED:
		do {
			madvise(buf, len, MADV_DONTNEED);
			if (!LOAD(sh->done))
				INC(sh->zaps_in_call, 1);
		} while (!LOAD(sh->done) && now() < end);
		break;
	}
	_exit(0);
}

TEST_F_TIMEOUT(thp_fork_zap, migrate_to_sys, 120)
{
	double budget = clamp_budget("HMM_RS_RACE_SECS",
				     env_num("HMM_RS_RACE_SECS", 10), 90);
	unsigned long npages = self->len / self->ps, p;
	long rounds = 0, pmd_rounds = 0, hits = 0, unchanged = 0, zaps = 0;
	long whole = 0, on_device = 0, errors = 0, died = 0, bad_pages = 0;
	long stuck = 0, stale = 0;
	struct tfz_shared *sh = self->sh;
	uint64_t *pme = malloc(npages * sizeof(*pme));
	double start, t;
	char how[64];
	int status, ret;
	size_t i;
	pid_t pid;

	ASSERT_NE(NULL, pme);
	start = now();
	while (now() - start < budget) {
		int pmd = 1, back_whole = 1, left = 0, absent = 0;
		long round = rounds++;

		/* A fresh THP, on the device, mapped by a device PMD. */
		madvise(self->buf, self->len, MADV_DONTNEED);
		for (i = 0; i < self->len; i++)
			self->expect[i] = (round * 31 + (i >> 12) * 7 + i) %
					  251 + 1;
		memcpy(self->buf, self->expect, self->len);
		ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				 (uintptr_t)self->buf, self->out, npages, NULL);
		if (!ret)
			ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT,
					 (uintptr_t)self->buf, self->out,
					 npages, NULL);
		if (ret) {
			if (errors++ < 5)
				note("round %ld: to the device: %s\n", round,
				     errname(-ret));
			continue;
		}
		for (p = 0; p < npages; p++)
			if (!(self->out[p] & HMM_DMIRROR_PROT_PMD))
				pmd = 0;
		pmd_rounds += pmd;

		/* The child shares the THP: fork() copies the device PMD. */
		memset(sh, 0, sizeof(*sh));
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		ASSERT_GE(pid, 0);
		if (pid == 0)
			tfz_child(variant->zap, sh, self->buf, self->len);
		t = now() + 10;
		while (!LOAD(sh->ready) && now() < t)
			usleep(100);
		STORE(sh->go, 1);
		ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS,
				 (uintptr_t)self->buf, NULL, npages, NULL);
		STORE(sh->done, 1);
		if (!wait_child(pid, &status, 20)) {
			note("round %ld: the child is not done 20 s after the migration: stuck\n",
			     round);
			kill(pid, SIGKILL);
			wait_child(pid, &status, 5);
			stuck++;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			describe_status(status, how, sizeof(how));
			if (died++ < 5)
				note("round %ld: the child: %s\n", round, how);
		}
		hits += tfz_migration_entry(sh->before, sh->seen);
		unchanged += sh->seen == sh->before;
		zaps += sh->zaps_in_call;
		if (ret) {
			if (errors++ < 5)
				note("round %ld: MIGRATE_TO_SYS: %s\n", round,
				     errname(-ret));
			continue;
		}

		/* Back in system memory, whole or split. */
		ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_SNAPSHOT,
				 (uintptr_t)self->buf, self->out, npages, NULL);
		if (ret) {
			if (errors++ < 5)
				note("round %ld: SNAPSHOT: %s\n", round,
				     errname(-ret));
			continue;
		}
		for (p = 0; p < npages; p++) {
			if (!(self->out[p] & HMM_DMIRROR_PROT_PMD))
				back_whole = 0;
			if ((self->out[p] & 0xf0) ==
			    HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL)
				left++;
		}
		whole += back_whole && !left;
		if (left && on_device++ < 5)
			note("round %ld: %d pages still on the device after MIGRATE_TO_SYS\n",
			     round, left);

		/*
		 * Pages neither present nor on the device: a migration entry
		 * that the migration never took back (the THP was freed under
		 * it). Touching them would wait for that migration forever.
		 */
		if (pagemap_entries(self->pagemap, self->buf, pme, npages)) {
			if (errors++ < 5)
				note("round %ld: pagemap unreadable\n", round);
			continue;
		}
		for (p = 0; p < npages; p++)
			absent += !(pme[p] & PM_PRESENT);
		if (absent > left) {
			note("round %ld: after MIGRATE_TO_SYS, %d pages neither present nor on the device; page 0: pagemap 0x%016llx (swap type %llu): a migration entry left behind\n",
			     round, absent - left,
			     (unsigned long long)pme[0],
			     (unsigned long long)PM_SWAP_TYPE(pme[0]));
			stale++;
			break;
		}

		/* The parent never zapped: every byte is still its own. */
		for (p = 0; p < npages; p++) {
			size_t off = p * self->ps;

			if (!memcmp(self->buf + off, self->expect + off,
				    self->ps))
				continue;
			for (i = off; self->buf[i] == (char)self->expect[i]; i++)
				;
			if (bad_pages++ < 5)
				note("round %ld: page %lu, byte %zu: 0x%02x, expected 0x%02x\n",
				     round, p, i - off,
				     (unsigned char)self->buf[i],
				     self->expect[i]);
		}
	}
	t = now() - start;

	note("MIGRATE_TO_SYS vs the fork child's %s: %ld rounds in %.1f s, %ld with the THP mapped by a device PMD\n",
	     variant->what, rounds, t, pmd_rounds);
	note("the child zapped on seeing a migration entry in %ld rounds (unchanged until the call returned: %ld); MADV_DONTNEED calls during the call: %ld\n",
	     hits, unchanged, zaps);
	note("back in system memory whole %ld times; left on the device %ld times; errors %ld; children died %ld, stuck %ld; wrong pages %ld\n",
	     whole, on_device, errors, died, stuck, bad_pages);
	free(pme);
	ASSERT_EQ(0, stale);
	ASSERT_EQ(0, device_works());
	EXPECT_EQ(0, errors);
	EXPECT_EQ(0, died);
	EXPECT_EQ(0, stuck);
	EXPECT_EQ(0, on_device);
	ASSERT_EQ(0, bad_pages);
}

/* ---- killable ---------------------------------------------------------- */

enum kill_op {
	KILL_READ,
	KILL_READ_UNLOCKED,
	KILL_WRITE,
	KILL_CHECK_EXCLUSIVE,
	KILL_MIGRATE_TO_DEV,
	KILL_MMAP,
};

FIXTURE(killable) {
	long page_size;
	/* Shared with the child. */
	struct kill_state {
		int phase;	/* 0 setup, 1 in the call, 2 returned, <0 -errno */
		long ret;
		double t_enter, t_return;
		int lock_seen;	/* migrate_to_dev: mmap_lock let go */
		double t_lock;
	} *st;
};

FIXTURE_VARIANT(killable) {
	enum kill_op op;
	const char *what;
};

FIXTURE_VARIANT_ADD(killable, read) {
	.op = KILL_READ,
	.what = "READ of a 16 GiB PROT_READ mapping",
};

FIXTURE_VARIANT_ADD(killable, read_unlocked) {
	.op = KILL_READ_UNLOCKED,
	.what = "READ_UNLOCKED of a 16 GiB PROT_READ mapping",
};

FIXTURE_VARIANT_ADD(killable, write) {
	.op = KILL_WRITE,
	.what = "WRITE of a big RW mapping from a PROT_READ one",
};

FIXTURE_VARIANT_ADD(killable, check_exclusive) {
	.op = KILL_CHECK_EXCLUSIVE,
	.what = "CHECK_EXCLUSIVE of 2^40 pages",
};

FIXTURE_VARIANT_ADD(killable, migrate_to_dev) {
	.op = KILL_MIGRATE_TO_DEV,
	.what = "MIGRATE_TO_DEV of a sparse shared memfd",
};

FIXTURE_VARIANT_ADD(killable, mmap) {
	.op = KILL_MMAP,
	.what = "mmap() of the device",
};

FIXTURE_SETUP(killable)
{
	self->page_size = sysconf(_SC_PAGESIZE);
	self->st = mmap(NULL, sizeof(*self->st), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->st);
}

FIXTURE_TEARDOWN(killable)
{
	munmap(self->st, sizeof(*self->st));
}

/*
 * A size that takes long to populate but cannot run the guest out of
 * memory (an OOM kill could take the test runner with it): half of
 * MemAvailable, at most @max.
 */
static uint64_t populate_size(uint64_t max)
{
	uint64_t s = mem_available() / 2 & ~((2ULL << 20) - 1);

	return s && s < max ? s : max;
}

static void *map_anon(uint64_t size, int prot, int nohuge)
{
	void *p = mmap(NULL, size, prot,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	/* Page by page: a huge zero page would make faulting too cheap. */
	if (p != MAP_FAILED && nohuge)
		madvise(p, size, MADV_NOHUGEPAGE);
	return p;
}

static void *map_memfd(uint64_t size)
{
	int fd = memfd_create("hmm-rs-sparse", 0);
	void *p;

	if (fd < 0 || ftruncate(fd, size))
		return MAP_FAILED;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p;
}

/*
 * A thread of the MIGRATE_TO_DEV child: finds when the migration loop is
 * over. The loop holds the mmap_lock for reading throughout, what follows
 * (the snapshot that maps the migrated pages) only a chunk at a time: an
 * mmap() that waited for the lock tells the loop is done.
 */
static void *mmap_lock_probe(void *p)
{
	struct kill_state *st = p;
	double t, end = now() + 120;
	void *m;

	while (LOAD(st->phase) < 1)
		usleep(1000);
	usleep(50000);
	while (LOAD(st->phase) == 1 && now() < end) {
		t = now();
		m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
		if (m != MAP_FAILED)
			munmap(m, 4096);
		if (now() - t >= 0.05) {
			st->t_lock = now();
			STORE(st->lock_seen, 1);
			break;
		}
		usleep(1000);
	}
	return NULL;
}

/* The child: sets up, enters the call, then waits to be killed. */
static void kill_child(enum kill_op op, struct kill_state *st, uint64_t size, long ps)
{
	unsigned long req = 0;
	void *addr = NULL, *ptr = NULL;
	uint64_t npages = size / ps;
	pthread_t probe;
	long ret;
	int fd;

	fd = open(DEVICE, O_RDWR);
	if (fd < 0)
		goto fail;
	switch (op) {
	case KILL_READ:
	case KILL_READ_UNLOCKED:
		req = op == KILL_READ ? HMM_DMIRROR_READ :
					HMM_DMIRROR_READ_UNLOCKED;
		addr = map_anon(size, PROT_READ, 1);
		ptr = map_anon(size, PROT_READ | PROT_WRITE, 0);
		break;
	case KILL_WRITE:
		req = HMM_DMIRROR_WRITE;
		addr = map_anon(size, PROT_READ | PROT_WRITE, 1);
		ptr = map_anon(size, PROT_READ, 0);
		break;
	case KILL_CHECK_EXCLUSIVE:
		req = HMM_DMIRROR_CHECK_EXCLUSIVE;
		addr = map_anon(ps, PROT_READ | PROT_WRITE, 0);
		if (addr != MAP_FAILED)
			memset(addr, 1, ps);
		ptr = addr;
		npages = 1ULL << 40;
		break;
	case KILL_MIGRATE_TO_DEV:
		req = HMM_DMIRROR_MIGRATE_TO_DEV;
		addr = map_memfd(size);
		ptr = map_anon(size, PROT_READ | PROT_WRITE, 0);
		errno = pthread_create(&probe, NULL, mmap_lock_probe, st);
		if (errno)
			goto fail;
		break;
	case KILL_MMAP:
		break;
	}
	if (addr == MAP_FAILED || ptr == MAP_FAILED)
		goto fail;
	st->t_enter = now();
	STORE(st->phase, 1);
	if (op == KILL_MMAP) {
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
			       fd, 0);

		ret = p == MAP_FAILED ? -errno : 0;
	} else {
		ret = hmm_rs_cmd(fd, req, (uintptr_t)addr, ptr, npages, NULL);
	}
	st->ret = ret;
	st->t_return = now();
	STORE(st->phase, 2);
	for (;;)
		pause();
fail:
	STORE(st->phase, -errno);
	_exit(1);
}

/*
 * Sizes MIGRATE_TO_DEV of a sparse memfd for migrate_to_dev: what follows
 * its migration loop (which checks for signals) should take about 2.5 s,
 * at 128 to 256 GiB. Measured on 2 GiB: MIGRATE_TO_SYS is that loop alone,
 * MIGRATE_TO_DEV the loop and what follows. Returns the size; @loop is how
 * long the loop should take, with a margin: the child's mmap_lock_probe()
 * tells when it is done, this is the fallback.
 */
static uint64_t migrate_size(double *loop)
{
	uint64_t cal = 2 * GIB, npages = cal / sysconf(_SC_PAGESIZE), gib;
	double t_sys, t_dev, t, g;
	int fd = open(DEVICE, O_RDWR);
	void *p = map_memfd(cal);
	void *out = map_anon(cal, PROT_READ | PROT_WRITE, 0);

	*loop = 10;
	if (fd < 0 || p == MAP_FAILED || out == MAP_FAILED) {
		if (fd >= 0)
			close(fd);
		return 128 * GIB;
	}
	t = now();
	hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)p, out, npages,
		   NULL);
	t_sys = (now() - t) / 2;
	t = now();
	hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)p, out, npages,
		   NULL);
	t_dev = (now() - t) / 2;
	munmap(p, cal);
	munmap(out, cal);
	close(fd);
	/* At most 256 GiB: 2.5 s at 2.5 / 256 s per GiB or more. */
	g = t_dev - t_sys > 2.5 / 256 ? 2.5 / (t_dev - t_sys) : 256;
	gib = g < 128 ? 128 : g;
	*loop = 1.5 * t_sys * gib + 1;
	note("calibration per GiB of memfd: MIGRATE_TO_SYS %.1f ms, MIGRATE_TO_DEV %.1f ms: %llu GiB\n",
	     t_sys * 1e3, t_dev * 1e3, (unsigned long long)gib);
	return gib * GIB;
}

TEST_F_TIMEOUT(killable, sigkill_within_1s, 120)
{
	double wait = clamp_budget("HMM_RS_KILL_WAIT_SECS",
				   env_num("HMM_RS_KILL_WAIT_SECS", 20), 60);
	struct kill_state *st = self->st;
	double delay = 0.3, loop = 0, t0, t_kill, took, setup_end;
	uint64_t size = 16 * GIB;
	int status, reaped, ret, phase;
	char how[64];
	pid_t pid;

	switch (variant->op) {
	case KILL_WRITE:
		size = populate_size(16 * GIB);
		break;
	case KILL_MMAP:
		size = populate_size(64 * GIB);
		break;
	case KILL_MIGRATE_TO_DEV:
		size = migrate_size(&loop);
		delay = 0.1;
		break;
	default:
		break;
	}
	if (variant->op == KILL_MIGRATE_TO_DEV)
		note("%s, %llu GiB: SIGKILL %.0f ms after its migration loop is done (at most %.1f s in)\n",
		     variant->what, (unsigned long long)(size >> 30), delay * 1e3,
		     loop);
	else if (variant->op == KILL_CHECK_EXCLUSIVE)
		note("%s: SIGKILL %.0f ms after the child enters the call\n",
		     variant->what, delay * 1e3);
	else
		note("%s, %llu MiB: SIGKILL %.0f ms after the child enters the call\n",
		     variant->what, (unsigned long long)(size >> 20),
		     delay * 1e3);

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		kill_child(variant->op, st, size, self->page_size);

	setup_end = now() + 30;
	while (!LOAD(st->phase) && now() < setup_end)
		usleep(1000);
	phase = LOAD(st->phase);
	if (phase <= 0) {
		kill(pid, SIGKILL);
		wait_child(pid, &status, wait);
		ASSERT_LT(0, phase) TH_LOG("child setup: %s", phase ?
					   errname(-phase) : "over 30 s");
	}
	if (loop) {
		t0 = now() + loop;
		while (!LOAD(st->lock_seen) && LOAD(st->phase) == 1 &&
		       now() < t0)
			usleep(1000);
		if (LOAD(st->lock_seen))
			note("migration loop done %.0f ms into the call (mmap_lock let go)\n",
			     (st->t_lock - st->t_enter) * 1e3);
		else if (LOAD(st->phase) == 1)
			note("mmap_lock not let go by the estimated end of the migration loop\n");
	}
	usleep(delay * 1e6);
	t0 = now();
	kill(pid, SIGKILL);
	reaped = wait_child(pid, &status, wait);
	t_kill = t0 - st->t_enter;
	took = now() - t0;
	if (LOAD(st->phase) == 2)
		note("the call had returned %s after %.0f ms, before the kill\n",
		     st->ret ? errname(-st->ret) : "0",
		     (st->t_return - st->t_enter) * 1e3);
	else
		note("killed %.0f ms into the call\n", t_kill * 1e3);
	if (reaped) {
		describe_status(status, how, sizeof(how));
		note("SIGKILL to reaped: %.0f ms (limit 1000 ms), %s\n",
		     took * 1e3, how);
	} else {
		note("SIGKILL to reaped: not reaped after %.1f s (limit 1 s): stuck in the kernel\n",
		     took);
	}
	ret = device_works();
	note("afterwards a READ through a new file: %s\n",
	     ret ? errname(-ret) : "ok");
	EXPECT_EQ(0, ret);
	ASSERT_TRUE(reaped);
	ASSERT_LT(took, 1.0);
}

/* ---- release_race ------------------------------------------------------ */

enum rel_op {
	OP_IDLE,
	OP_MIGRATE_TO_DEV,
	OP_MIGRATE_TO_SYS,
	OP_CPU,
	OP_RELEASE,
	OP_DONE,
};

static const char * const rel_op_name[] = {
	"idle", "MIGRATE_TO_DEV", "MIGRATE_TO_SYS", "CPU access", "RELEASE",
	"done",
};

/* Shared between the worker process and the watchdog (the test). */
struct rel_shared {
	int stop;
	struct {
		pid_t tid;
		int op;
		double op_start;	/* published by op */
		long rounds;
		long errors;
		int last_error;
	} th[2];
	long bad_data;
	long to_dev_ok, to_dev_pages, to_sys, release_busy;
	long final_bad_pages;
	char first_bad[160];
};

#define REL_MAX_PAGES 512

struct rel_ctx {
	struct rel_shared *sh;
	int fd[2];
	long ps;
	char *buf;
	char *out;
};

static void rel_op(struct rel_shared *sh, int t, int op)
{
	sh->th[t].op_start = now();
	STORE(sh->th[t].op, op);
}

static unsigned char rel_byte(unsigned long round, unsigned long page, long i)
{
	return (round * 31 + page * 7 + i) % 251 + 1;
}

/* Pages of @p (npages, written in @round) that differ from the pattern. */
static long rel_check(struct rel_shared *sh, const char *what, const char *p,
		      unsigned long npages, long ps, unsigned long round)
{
	unsigned long pg;
	long bad = 0, i;

	for (pg = 0; pg < npages; pg++) {
		for (i = 0; i < ps; i += 64)
			if ((unsigned char)p[pg * ps + i] != rel_byte(round, pg, i))
				break;
		if (i >= ps)
			continue;
		if (!bad++ && !sh->first_bad[0])
			snprintf(sh->first_bad, sizeof(sh->first_bad),
				 "%s, round %lu, page %lu, byte %ld: 0x%02x, expected 0x%02x",
				 what, round, pg, i, (unsigned char)p[pg * ps + i],
				 rel_byte(round, pg, i));
	}
	return bad;
}

static void rel_error(struct rel_shared *sh, int t, int err)
{
	STORE(sh->th[t].last_error, err);
	INC(sh->th[t].errors, 1);
}

static void *rel_migrator(void *p)
{
	struct rel_ctx *c = p;
	struct rel_shared *sh = c->sh;
	unsigned long round = 0, npages = 0, pg;
	struct hmm_dmirror_cmd cmd;
	long i;
	int ret;

	STORE(sh->th[0].tid, gettid());
	while (!LOAD(sh->stop)) {
		/* The CPU view of the last round first: faults pages back. */
		if (npages) {
			rel_op(sh, 0, OP_CPU);
			INC(sh->bad_data, rel_check(sh, "CPU view", c->buf,
						    npages, c->ps, round));
		}
		round++;
		npages = 64 + lrand48() % (REL_MAX_PAGES - 64 + 1);
		rel_op(sh, 0, OP_CPU);
		for (pg = 0; pg < npages; pg++)
			for (i = 0; i < c->ps; i += 64)
				c->buf[pg * c->ps + i] = rel_byte(round, pg, i);
		rel_op(sh, 0, OP_MIGRATE_TO_DEV);
		ret = hmm_rs_cmd(c->fd[0], HMM_DMIRROR_MIGRATE_TO_DEV,
				 (uintptr_t)c->buf, c->out, npages, &cmd);
		if (!ret) {
			INC(sh->to_dev_ok, 1);
			INC(sh->to_dev_pages, cmd.cpages);
			/* What the device holds, as the call returned it. */
			INC(sh->bad_data, rel_check(sh, "MIGRATE_TO_DEV output",
						    c->out, npages, c->ps,
						    round));
		} else if (ret != -ENOENT && ret != -EBUSY && ret != -ENOMEM) {
			rel_error(sh, 0, -ret);
		}
		if (lrand48() % 2) {
			rel_op(sh, 0, OP_MIGRATE_TO_SYS);
			ret = hmm_rs_cmd(c->fd[0], HMM_DMIRROR_MIGRATE_TO_SYS,
					 (uintptr_t)c->buf, c->out, npages,
					 NULL);
			if (ret)
				rel_error(sh, 0, -ret);
			else
				INC(sh->to_sys, 1);
		}
		INC(sh->th[0].rounds, 1);
	}
	if (npages) {
		rel_op(sh, 0, OP_CPU);
		STORE(sh->final_bad_pages,
		      rel_check(sh, "final CPU view", c->buf, npages, c->ps,
				round));
	}
	rel_op(sh, 0, OP_DONE);
	return NULL;
}

static void *rel_releaser(void *p)
{
	struct rel_ctx *c = p;
	struct rel_shared *sh = c->sh;
	int ret;

	STORE(sh->th[1].tid, gettid());
	while (!LOAD(sh->stop)) {
		rel_op(sh, 1, OP_RELEASE);
		ret = hmm_rs_cmd(c->fd[1], HMM_DMIRROR_RELEASE, 0, NULL, 1,
				 NULL);
		if (ret == -EBUSY)
			INC(sh->release_busy, 1);
		else if (ret)
			rel_error(sh, 1, -ret);
		INC(sh->th[1].rounds, 1);
		rel_op(sh, 1, OP_IDLE);
		usleep(lrand48() % 2000);
	}
	rel_op(sh, 1, OP_DONE);
	return NULL;
}

/* The worker process: both threads, for @budget seconds. */
static void rel_worker(struct rel_shared *sh, double budget)
{
	struct rel_ctx c = { .sh = sh, .ps = sysconf(_SC_PAGESIZE) };
	pthread_t th[2];
	double end;

	c.fd[0] = open(DEVICE, O_RDWR);
	c.fd[1] = open(DEVICE, O_RDWR);
	c.buf = mmap(NULL, REL_MAX_PAGES * c.ps, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	c.out = malloc(REL_MAX_PAGES * c.ps);
	if (c.fd[0] < 0 || c.fd[1] < 0 || c.buf == MAP_FAILED || !c.out)
		_exit(2);
	srand48(getpid());
	if (pthread_create(&th[0], NULL, rel_migrator, &c) ||
	    pthread_create(&th[1], NULL, rel_releaser, &c))
		_exit(3);
	end = now() + budget;
	while (now() < end)
		usleep(10000);
	STORE(sh->stop, 1);
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	_exit(0);
}

/* "R (wchan)" of a thread, from /proc. */
static void thread_state(pid_t pid, pid_t tid, char *buf, size_t len)
{
	char path[64], stat[512] = "", wchan[160] = "?";
	char *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(stat, sizeof(stat), f))
			stat[0] = '\0';
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", pid, tid);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(wchan, sizeof(wchan), f))
			snprintf(wchan, sizeof(wchan), "?");
		fclose(f);
	}
	p = strrchr(stat, ')');
	snprintf(buf, len, "state %c, wchan %s", p && p[1] ? p[2] : '?', wchan);
}

FIXTURE(release_race) {
	struct rel_shared *sh;
};

FIXTURE_SETUP(release_race)
{
	self->sh = mmap(NULL, sizeof(*self->sh), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->sh);
}

FIXTURE_TEARDOWN(release_race)
{
	munmap(self->sh, sizeof(*self->sh));
}

TEST_F_TIMEOUT(release_race, release_vs_migrate, 300)
{
	double budget = clamp_budget("HMM_RS_RELEASE_SECS",
				     env_num("HMM_RS_RELEASE_SECS", 15), 200);
	double grace = clamp_budget("HMM_RS_STUCK_SECS",
				    env_num("HMM_RS_STUCK_SECS", 30), 60);
	static const char * const who[] = { "migrating", "releasing" };
	struct rel_shared *sh = self->sh;
	double start, took;
	int status, reaped, t;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	start = now();
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		rel_worker(sh, budget);
	reaped = wait_child(pid, &status, budget + grace);
	took = now() - start;

	for (t = 0; t < 2; t++) {
		int op = LOAD(sh->th[t].op);
		pid_t tid = LOAD(sh->th[t].tid);
		char state[256] = "";

		if (!reaped && op != OP_DONE && tid)
			thread_state(pid, tid, state, sizeof(state));
		note("%s thread: %ld rounds, %ld errors (last %s)%s%s%s%s\n",
		     who[t], LOAD(sh->th[t].rounds), LOAD(sh->th[t].errors),
		     LOAD(sh->th[t].errors) ?
		     errname(LOAD(sh->th[t].last_error)) : "-",
		     reaped ? "" : ", now in ", reaped ? "" : rel_op_name[op],
		     state[0] ? ", " : "", state);
		if (!reaped && op != OP_DONE && op != OP_IDLE)
			note("%s thread STUCK in %s for %.1f s\n", who[t],
			     rel_op_name[op], now() - sh->th[t].op_start);
	}
	note("MIGRATE_TO_DEV: %ld ok (%ld pages); MIGRATE_TO_SYS: %ld ok; RELEASE: %ld EBUSY; bad pages: %ld%s%s\n",
	     sh->to_dev_ok, sh->to_dev_pages, sh->to_sys, sh->release_busy,
	     sh->bad_data,
	     sh->first_bad[0] ? ", first: " : "", sh->first_bad);
	if (!reaped) {
		note("worker not done %.1f s after a %.0f s budget: stuck\n",
		     took - budget, budget);
		kill(pid, SIGKILL);
		wait_child(pid, &status, 2);
	}
	ASSERT_TRUE(reaped);
	ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status))
		TH_LOG("worker status 0x%x", status);
	note("budget %.0f s, took %.1f s; final CPU view: %ld bad pages\n",
	     budget, took, sh->final_bad_pages);
	EXPECT_EQ(0, sh->th[0].errors);
	EXPECT_EQ(0, sh->th[1].errors);
	EXPECT_EQ(0, sh->bad_data);
	ASSERT_EQ(0, sh->final_bad_pages);
}

/* ---- concurrent_write -------------------------------------------------- */

#define CW_PAGES 64

struct cw_arg {
	int fd;
	char *buf;
	char *src;
	size_t len;
	int *stop;
	long rounds, errors;
	int last_error;
};

static void *cw_writer(void *p)
{
	struct cw_arg *a = p;
	int ret;

	while (!LOAD(*a->stop)) {
		ret = hmm_rs_cmd(a->fd, HMM_DMIRROR_WRITE, (uintptr_t)a->buf,
				 a->src, CW_PAGES, NULL);
		if (ret) {
			a->errors++;
			a->last_error = -ret;
		}
		a->rounds++;
	}
	return NULL;
}

/* Bytes of @p that are neither @a nor @b. */
static long cw_bad(const unsigned char *p, size_t len, unsigned char a,
		   unsigned char b)
{
	long bad = 0;
	size_t i;

	for (i = 0; i < len; i++)
		bad += p[i] != a && p[i] != b;
	return bad;
}

TEST(concurrent_write)
{
	double budget = clamp_budget("HMM_RS_WRITE_SECS",
				     env_num("HMM_RS_WRITE_SECS", 3), 20);
	static const unsigned char pat[2] = { 0x11, 0x22 };
	long ps = sysconf(_SC_PAGESIZE);
	size_t len = CW_PAGES * ps;
	int stop = 0;
	struct cw_arg a[2];
	long bad_cpu, bad_read[2];
	pthread_t th[2];
	char *buf, *out;
	double start;
	int i, ret;

	buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, pat[0], len);
	out = malloc(len);
	ASSERT_NE(NULL, out);
	for (i = 0; i < 2; i++) {
		a[i] = (struct cw_arg){ .buf = buf, .len = len, .stop = &stop };
		a[i].fd = open(DEVICE, O_RDWR);
		ASSERT_GE(a[i].fd, 0);
		a[i].src = malloc(len);
		ASSERT_NE(NULL, a[i].src);
		memset(a[i].src, pat[i], len);
	}
	start = now();
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&th[i], NULL, cw_writer, &a[i]));
	while (now() - start < budget)
		usleep(10000);
	STORE(stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);

	bad_cpu = cw_bad((unsigned char *)buf, len, pat[0], pat[1]);
	for (i = 0; i < 2; i++) {
		ret = hmm_rs_cmd(a[i].fd, HMM_DMIRROR_READ, (uintptr_t)buf,
				 out, CW_PAGES, NULL);
		EXPECT_EQ(0, ret);
		bad_read[i] = ret ? -1 : cw_bad((unsigned char *)out, len,
						pat[0], pat[1]);
	}
	for (i = 0; i < 2; i++)
		note("file %d: %ld WRITEs of %d pages in %.1f s, %ld errors (last %s)\n",
		     i, a[i].rounds, CW_PAGES, budget, a[i].errors,
		     a[i].errors ? errname(a[i].last_error) : "-");
	note("bytes of neither pattern: CPU view %ld, READ through file 0 %ld, file 1 %ld\n",
	     bad_cpu, bad_read[0], bad_read[1]);
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(0, a[i].errors);
		EXPECT_EQ(0, bad_read[i]);
		close(a[i].fd);
		free(a[i].src);
	}
	free(out);
	munmap(buf, len);
	ASSERT_EQ(0, bad_cpu);
}

/*
 * HMM_DMIRROR_WRITE on a page that sits read-only in the same device's
 * private memory, after a fork (copy-on-write) or mprotect(PROT_READ):
 * hmm_range_fault() returns the device's own pages as they are, so a
 * driver that maps the read-only entry and faults again never ends (found
 * by hmm_rs_stress). The WRITE must return within 5 s: with EFAULT (as
 * test_hmm.c), with EPERM after mprotect() (the VMA is read-only, as for a
 * WRITE to read-only system memory), or having written (rust_test_hmm
 * faults a read-only page of its own back to system memory, as a CPU write
 * would); the page then holds the old or the new contents, nothing else.
 */
FIXTURE(readonly_device_write) {
	int fd;
	char *p;
	long ps;
};

FIXTURE_VARIANT(readonly_device_write) {
	int fork;
};

FIXTURE_VARIANT_ADD(readonly_device_write, after_fork) { .fork = 1 };
FIXTURE_VARIANT_ADD(readonly_device_write, after_mprotect) { .fork = 0 };

FIXTURE_SETUP(readonly_device_write)
{
	self->ps = sysconf(_SC_PAGESIZE);
	self->fd = open(DEVICE, O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->p = mmap(NULL, self->ps, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->p);
}

FIXTURE_TEARDOWN(readonly_device_write)
{
	munmap(self->p, self->ps);
	close(self->fd);
}

TEST_F_TIMEOUT(readonly_device_write, returns, 60)
{
	char *buf = malloc(self->ps);
	pid_t child = -1, w;
	int st, ret;

	ASSERT_NE(NULL, buf);
	memset(self->p, 1, self->ps);
	ASSERT_EQ(0, hmm_rs_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				(uintptr_t)self->p, buf, 1, NULL));
	if (variant->fork) {
		child = fork();
		ASSERT_GE(child, 0);
		if (!child) {
			pause();
			_exit(0);
		}
	} else {
		ASSERT_EQ(0, mprotect(self->p, self->ps, PROT_READ));
	}
	/* The WRITE in a process of its own, which a hang cannot stop. */
	w = fork();
	ASSERT_GE(w, 0);
	if (!w) {
		memset(buf, 2, self->ps);
		alarm(5);
		ret = hmm_rs_cmd(self->fd, HMM_DMIRROR_WRITE,
				 (uintptr_t)self->p, buf, 1, NULL);
		_exit(ret == 0 ? 0 : ret == -EFAULT ? 1 :
		      ret == -EPERM && !variant->fork ? 3 : 2);
	}
	ASSERT_EQ(w, waitpid(w, &st, 0));
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	if (WIFSIGNALED(st))
		note("WRITE killed by signal %d (SIGALRM: it did not return in 5 s)\n",
		     WTERMSIG(st));
	else
		note("WRITE: %s\n", WEXITSTATUS(st) == 0 ? "done" :
		     WEXITSTATUS(st) == 1 ? "EFAULT" :
		     WEXITSTATUS(st) == 3 ? "EPERM" : "another error");
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_NE(2, WEXITSTATUS(st));
	EXPECT_TRUE(self->p[0] == 1 || self->p[0] == 2);
	free(buf);
}

TEST_HARNESS_MAIN
