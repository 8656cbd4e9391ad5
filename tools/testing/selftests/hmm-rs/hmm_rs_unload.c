// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs unload kselftests: the dmirror module unloads cleanly right after,
 * and while, a process uses its device memory. Runs with the module loaded
 * and leaves it loaded (see scripts/plans/check). What each guards:
 *
 * unload.*.after_exit: a child migrates 4 MiB (a 2 MiB THP and 512 small
 *   pages) to the device and exits without unmapping it or closing the
 *   device; right after waitpid() the module is removed. Removal must
 *   succeed without hanging or oopsing (device pages freed as the child's
 *   mm goes away must not outlive the module's memory).
 *
 * unload.*.while_mapped: a child migrates the same to the device and
 *   closes the device; the module is removed while the child still maps
 *   the device pages. Removal must move them back to system memory: the
 *   child then reads its data intact and exits normally.
 *
 * unload.*.exit_during_unload: as while_mapped, but the child is killed
 *   while the module is being removed, so that its exit frees the device
 *   pages the removal is moving back; HMM_RS_UNLOAD_ROUNDS (4) rounds,
 *   the kill at a different moment of the removal each. Skipped unless
 *   HMM_RS_KERNEL_BUGS is set: on 7.3 it hits a kernel bug (see
 *   KERNEL_BUG_ANON_VMA), which KASAN reports and which no driver can
 *   work around.
 *
 * load.cycles: HMM_RS_LOAD_CYCLES (1000) removals and insertions of the
 *   module in a row; every 100th cycle the test first migrates 4 MiB to
 *   /dev/hmm_dmirror0, closes it and keeps the pages mapped, so that the
 *   removal evicts them: the data must come back intact. Every removal
 *   and insertion must succeed (no leak, no hang: a debug kernel's
 *   kmemleak scan and hung-task detector watch the rest). The module's
 *   KUnit suites are filtered out for the cycles (KUnit's filter_glob,
 *   restored afterwards): they run at every load and register a pagemap,
 *   which would double the time of the cycles without testing removal.
 *
 * load.refused_while_open: removal fails (EBUSY or EAGAIN) while a device
 *   file is open, the module stays live, and succeeds once it is closed.
 *
 * The removal runs in a child of its own with a deadline (30 s), so a
 * removal stuck in the kernel is reported rather than hanging the suite;
 * afterwards the module is inserted again (finit_module()) with the same
 * arguments, for whatever runs next. Variants: device-private memory
 * (hmm_dmirror0) and device-coherent memory (hmm_dmirror2, skipped when
 * the module was loaded without it).
 *
 * Environment: HMM_RS_MODULE_NAME (rust_test_hmm), HMM_RS_MODULE_PATH
 * (/lib/modules/<name>.ko), HMM_RS_MODULE_ARGS (the insmod arguments; by
 * default those /sys/module/<name>/parameters shows, if any).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Why exit_during_unload is skipped on an unpatched 7.3 kernel. */
#define KERNEL_BUG_ANON_VMA \
	"kernel bug: migrate_device_range() does not pin the anon_vma of " \
	"the folios it unmaps, so a process exiting during eviction frees " \
	"it before migrate_device_finalize() walks it (KASAN: " \
	"slab-use-after-free in rmap_walk_anon); see patches/README"

#include "kselftest_harness.h"
#include "hmm_rs.h"

#define THP_SIZE (2UL << 20)
/* A THP and as many small pages. */
#define AREA_SIZE (2 * THP_SIZE)
#define REMOVE_SECS 30.0

/* ksft_print_msg(), flushed: a crash or a stuck child must not eat it. */
#define note(...) do {				\
	ksft_print_msg(__VA_ARGS__);		\
	fflush(stdout);				\
} while (0)

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return s ? s : "E?";
}

static const char *module_name(void)
{
	const char *s = getenv("HMM_RS_MODULE_NAME");

	return s && *s ? s : "rust_test_hmm";
}

static int module_loaded(void)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/module/%s/initstate", module_name());
	return !stat(path, &st);
}

/* The arguments to insert the module with again. */
static void module_args(char *buf, size_t len)
{
	const char *env = getenv("HMM_RS_MODULE_ARGS");
	char path[512], val[128];
	struct dirent *d;
	size_t n = 0;
	DIR *dir;
	FILE *f;

	buf[0] = '\0';
	if (env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	snprintf(path, sizeof(path), "/sys/module/%s/parameters", module_name());
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir)) && n < len) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/module/%s/parameters/%s",
			 module_name(), d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(val, sizeof(val), f)) {
			val[strcspn(val, "\n")] = '\0';
			n += snprintf(buf + n, len - n, "%s%s=%s", n ? " " : "",
				      d->d_name, val);
		}
		fclose(f);
	}
	closedir(dir);
}

/*
 * Waits up to @secs for child @pid to end; returns 1 with its wait status
 * in @status once reaped, 0 if it is still there.
 */
static int wait_child(pid_t pid, int *status, double secs)
{
	double end = now() + secs;

	for (;;) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return 1;
		if (now() >= end)
			return 0;
		usleep(2000);
	}
}

/*
 * Starts removing the module, retrying for @secs while it is busy, in a
 * child; returns its pid (or a negative errno).
 */
static pid_t remove_module_start(double secs)
{
	pid_t pid;
	int err;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		double end = now() + secs;

		for (;;) {
			if (!syscall(SYS_delete_module, module_name(), O_NONBLOCK))
				_exit(0);
			err = errno;
			if ((err != EBUSY && err != EAGAIN) || now() > end)
				_exit(err);
			usleep(20000);
		}
	}
	return pid;
}

/*
 * Waits for the removal remove_module_start() began at @start: returns 0,
 * a negative errno, or -ETIMEDOUT if it is still in the kernel past the
 * deadline. @took is how long it took.
 */
static int remove_module_finish(pid_t pid, double start, double secs,
				double *took)
{
	int status;

	*took = 0;
	if (pid < 0)
		return pid;
	if (!wait_child(pid, &status, start + secs + 5 - now())) {
		*took = now() - start;
		return -ETIMEDOUT;
	}
	*took = now() - start;
	if (WIFSIGNALED(status))
		return -EINTR;
	return -WEXITSTATUS(status);
}

/* Removes the module, as remove_module_start() and _finish(). */
static int remove_module(double secs, double *took)
{
	double start = now();

	return remove_module_finish(remove_module_start(secs), start, secs,
				    took);
}

/* Inserts the module again; 0 or a negative errno. */
static int insert_module(const char *args)
{
	const char *path = getenv("HMM_RS_MODULE_PATH");
	char buf[256];
	int fd, ret = 0;

	if (!path || !*path) {
		snprintf(buf, sizeof(buf), "/lib/modules/%s.ko", module_name());
		path = buf;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (syscall(SYS_finit_module, fd, args, 0))
		ret = -errno;
	close(fd);
	return ret == -EEXIST ? 0 : ret;
}

static unsigned char pattern(size_t i)
{
	return (i * 13 + i / 4096) % 251 + 1;
}

/* What a child reports of its migration. */
struct migrated {
	int ret;		/* MIGRATE_TO_DEV */
	uint64_t cpages;	/* pages it migrated */
	uint64_t on_device;	/* pages SNAPSHOT shows on the device */
	uint64_t pmd;		/* of those, mapped by a PMD */
	int bad_pages;		/* while_mapped: pages with wrong data after */
};

/*
 * In a child: maps AREA_SIZE, a THP first (2 MiB aligned), then small
 * pages, fills it and migrates it to the device of @fd. Returns the area.
 */
static char *migrate_area(int fd, struct migrated *m)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t npages = AREA_SIZE / ps, i;
	struct hmm_dmirror_cmd c;
	unsigned char *snap;
	char *raw, *area;
	void *out;

	memset(m, 0, sizeof(*m));
	raw = mmap(NULL, AREA_SIZE + THP_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	snap = malloc(npages);
	out = malloc(AREA_SIZE);
	if (raw == MAP_FAILED || !snap || !out) {
		m->ret = -ENOMEM;
		return NULL;
	}
	area = (char *)(((uintptr_t)raw + THP_SIZE - 1) & ~(THP_SIZE - 1));
	madvise(area, THP_SIZE, MADV_HUGEPAGE);
	madvise(area + THP_SIZE, AREA_SIZE - THP_SIZE, MADV_NOHUGEPAGE);
	for (i = 0; i < AREA_SIZE; i++)
		area[i] = pattern(i);
	m->ret = hmm_rs_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)(area), out,
			    npages, &c);
	m->cpages = c.cpages;
	if (!m->ret && !hmm_rs_cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)(area), snap,
				   npages, NULL)) {
		for (i = 0; i < npages; i++) {
			if (snap[i] & (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL |
				       HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL))
				m->on_device++;
			if (snap[i] & HMM_DMIRROR_PROT_PMD)
				m->pmd++;
		}
	}
	free(out);
	free(snap);
	return area;
}

/* Pages of @area whose data is not the pattern. */
static int check_area(const char *area)
{
	long ps = sysconf(_SC_PAGESIZE);
	int bad = 0;
	size_t i;

	for (i = 0; i < AREA_SIZE; i++) {
		if ((unsigned char)area[i] != pattern(i)) {
			bad++;
			i = (i / ps + 1) * ps - 1;
		}
	}
	return bad;
}

FIXTURE(unload) {
	char args[512];
	int removed;
	int pipe_up[2], pipe_down[2];
};

FIXTURE_VARIANT(unload) {
	const char *dev;
};

FIXTURE_VARIANT_ADD(unload, private) { .dev = "/dev/hmm_dmirror0" };
FIXTURE_VARIANT_ADD(unload, coherent) { .dev = "/dev/hmm_dmirror2" };

FIXTURE_SETUP(unload)
{
	if (!module_loaded())
		SKIP(return, "%s is not loaded", module_name());
	if (access(variant->dev, F_OK))
		SKIP(return, "no %s", variant->dev);
	module_args(self->args, sizeof(self->args));
	ASSERT_EQ(0, pipe(self->pipe_up));
	ASSERT_EQ(0, pipe(self->pipe_down));
}

FIXTURE_TEARDOWN(unload)
{
	int ret;

	/* Whatever happened, leave the module loaded as it was found. */
	if (self->removed && !module_loaded()) {
		ret = insert_module(self->args);
		note("module inserted again (\"%s\"): %s\n", self->args,
		     ret ? errname(-ret) : "ok");
	}
}

/* Reads @len bytes from @fd within @secs; 0 or -1. */
static int read_within(int fd, void *buf, size_t len, double secs)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, secs * 1000) != 1)
		return -1;
	return read(fd, buf, len) == (ssize_t)len ? 0 : -1;
}

static void report_migration(const char *dev, const struct migrated *m)
{
	note("child: MIGRATE_TO_DEV of 4 MiB (THP + 512 pages) on %s: %s, %llu pages; on the device per SNAPSHOT: %llu (%llu PMD-mapped)\n",
	     dev, m->ret ? errname(-m->ret) : "ok",
	     (unsigned long long)m->cpages, (unsigned long long)m->on_device,
	     (unsigned long long)m->pmd);
}

/* Inserts the module again after a removal; says how it went. */
static int reinsert(const char *args)
{
	int ins = insert_module(args);

	note("module inserted again (\"%s\"): %s\n", args,
	     ins ? errname(-ins) : "ok");
	return ins;
}

TEST_F_TIMEOUT(unload, after_exit, 120)
{
	struct migrated m = { 0 };
	int status, ret, fd;
	double took;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		fd = open(variant->dev, O_RDWR);
		if (fd < 0)
			m.ret = -errno;
		else
			migrate_area(fd, &m);
		if (write(self->pipe_up[1], &m, sizeof(m)) != sizeof(m))
			_exit(2);
		/* Exits with the device open and its pages mapped. */
		_exit(0);
	}
	ASSERT_EQ(0, read_within(self->pipe_up[0], &m, sizeof(m), 60));
	ASSERT_TRUE(wait_child(pid, &status, 30));
	self->removed = 1;
	ret = remove_module(REMOVE_SECS, &took);
	report_migration(variant->dev, &m);
	note("child exited (status 0x%x); module removal right after: %s in %.2f s%s\n",
	     status, ret ? errname(-ret) : "ok", took,
	     ret == -ETIMEDOUT ? " (STUCK in delete_module)" : "");
	if (ret != -ETIMEDOUT)
		EXPECT_EQ(0, reinsert(self->args));
	EXPECT_EQ(0, m.ret);
	EXPECT_NE(0, m.on_device);
	ASSERT_EQ(0, ret);
}

TEST_F_TIMEOUT(unload, while_mapped, 120)
{
	struct migrated m = { 0 };
	int status, ret, fd, reaped;
	char go = 1, how[64];
	double took;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char *area = NULL;

		fd = open(variant->dev, O_RDWR);
		if (fd < 0) {
			m.ret = -errno;
		} else {
			area = migrate_area(fd, &m);
			close(fd);
		}
		if (write(self->pipe_up[1], &m, sizeof(m)) != sizeof(m))
			_exit(2);
		/* The module goes away now; then the data must be intact. */
		if (read(self->pipe_down[0], &go, 1) != 1)
			_exit(3);
		m.bad_pages = area ? check_area(area) : -1;
		if (write(self->pipe_up[1], &m, sizeof(m)) != sizeof(m))
			_exit(4);
		_exit(0);
	}
	ASSERT_EQ(0, read_within(self->pipe_up[0], &m, sizeof(m), 60));
	report_migration(variant->dev, &m);
	self->removed = 1;
	ret = remove_module(REMOVE_SECS, &took);
	note("device closed, pages still mapped; module removal: %s in %.2f s%s\n",
	     ret ? errname(-ret) : "ok", took,
	     ret == -ETIMEDOUT ? " (STUCK in delete_module)" : "");
	ASSERT_EQ(1, write(self->pipe_down[1], &go, 1));
	m.bad_pages = -1;
	if (read_within(self->pipe_up[0], &m, sizeof(m), 30))
		note("child did not report its data check within 30 s\n");
	reaped = wait_child(pid, &status, 30);
	if (reaped) {
		if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "killed by signal %d",
				 WTERMSIG(status));
		else
			snprintf(how, sizeof(how), "exit %d",
				 WEXITSTATUS(status));
	} else {
		snprintf(how, sizeof(how), "STUCK, not done after 30 s");
		kill(pid, SIGKILL);
	}
	note("child read its data back: %d bad page(s) of %lu; child %s\n",
	     m.bad_pages, AREA_SIZE / sysconf(_SC_PAGESIZE), how);
	if (ret != -ETIMEDOUT)
		EXPECT_EQ(0, reinsert(self->args));
	EXPECT_EQ(0, m.ret);
	EXPECT_NE(0, m.on_device);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, m.bad_pages);
	ASSERT_TRUE(reaped && WIFEXITED(status) && !WEXITSTATUS(status));
}

TEST_F_TIMEOUT(unload, exit_during_unload, 120)
{
	int rounds = 4, round, ret = 0, bad = 0, status, reaped, ins, fd;
	const char *env = getenv("HMM_RS_UNLOAD_ROUNDS");
	double start, took, delay;
	struct migrated m = { 0 };
	char how[64];
	pid_t pid, rm;

	if (!getenv("HMM_RS_KERNEL_BUGS"))
		SKIP(return, "%s", KERNEL_BUG_ANON_VMA);
	if (env && atoi(env) > 0 && atoi(env) <= 50)
		rounds = atoi(env);
	for (round = 0; round < rounds && ret != -ETIMEDOUT; round++) {
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		ASSERT_GE(pid, 0);
		if (pid == 0) {
			fd = open(variant->dev, O_RDWR);
			if (fd < 0) {
				m.ret = -errno;
			} else {
				migrate_area(fd, &m);
				close(fd);
			}
			if (write(self->pipe_up[1], &m, sizeof(m)) != sizeof(m))
				_exit(2);
			/* Holds the device pages until it is killed. */
			for (;;)
				pause();
		}
		ASSERT_EQ(0, read_within(self->pipe_up[0], &m, sizeof(m), 60));
		if (m.ret || !m.on_device)
			report_migration(variant->dev, &m);
		ASSERT_EQ(0, m.ret);
		/* Kill it at a different moment of each removal (~0.3 s). */
		delay = 0.4 * round / rounds;
		self->removed = 1;
		start = now();
		rm = remove_module_start(REMOVE_SECS);
		usleep(delay * 1e6);
		kill(pid, SIGKILL);
		reaped = wait_child(pid, &status, 30);
		ret = remove_module_finish(rm, start, REMOVE_SECS, &took);
		if (!reaped)
			snprintf(how, sizeof(how), "STUCK, not done after 30 s");
		else if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "killed by signal %d",
				 WTERMSIG(status));
		else
			snprintf(how, sizeof(how), "exit %d",
				 WEXITSTATUS(status));
		note("round %d: %llu pages on %s; killed %.0f ms into the removal: %s; removal %s in %.2f s%s\n",
		     round, (unsigned long long)m.on_device, variant->dev,
		     delay * 1e3, how, ret ? errname(-ret) : "ok", took,
		     ret == -ETIMEDOUT ? " (STUCK in delete_module)" : "");
		if (ret || !reaped || !WIFSIGNALED(status) ||
		    WTERMSIG(status) != SIGKILL)
			bad++;
		if (ret != -ETIMEDOUT) {
			ins = insert_module(self->args);
			if (ins) {
				note("module inserted again (\"%s\"): %s\n",
				     self->args, errname(-ins));
				bad++;
				break;
			}
		}
	}
	note("%d round(s), %d bad\n", round, bad);
	ASSERT_EQ(0, bad);
}

#define KUNIT_FILTER_GLOB "/sys/module/kunit/parameters/filter_glob"

/*
 * Sets KUnit's filter_glob to @glob, returning the old one in @old (empty
 * when there is no KUnit, whose module suites then never run); "(null)",
 * what an unset one reads as, is stored back as "*", its meaning.
 */
static void kunit_filter_swap(const char *glob, char *old, size_t size)
{
	ssize_t n = 0;
	int fd;

	fd = open(KUNIT_FILTER_GLOB, O_RDWR);
	if (fd < 0) {
		if (old)
			old[0] = '\0';
		return;
	}
	if (old) {
		n = read(fd, old, size - 1);
		old[n > 0 ? n : 0] = '\0';
		old[strcspn(old, "\n")] = '\0';
		if (!strcmp(old, "(null)"))
			strcpy(old, "*");
	}
	if (glob[0] && pwrite(fd, glob, strlen(glob), 0) < 0)
		note("cannot set %s: %s\n", KUNIT_FILTER_GLOB, strerror(errno));
	close(fd);
}

FIXTURE(load) {
	char args[512];
	char kunit_glob[256];
};

FIXTURE_SETUP(load)
{
	module_args(self->args, sizeof(self->args));
	ASSERT_TRUE(module_loaded());
	kunit_filter_swap("hmm_rs_unload_runs_no_kunit_suite", self->kunit_glob,
			  sizeof(self->kunit_glob));
}

FIXTURE_TEARDOWN(load)
{
	kunit_filter_swap(self->kunit_glob, NULL, 0);
	if (!module_loaded())
		insert_module(self->args);
}

TEST_F_TIMEOUT(load, cycles, 900)
{
	const char *env = getenv("HMM_RS_LOAD_CYCLES");
	int cycles = 1000, i, ret, fd, bad = 0, checked = 0;
	double start = now(), took, slowest = 0;
	struct migrated m;
	char *area = NULL;

	if (env && atoi(env) > 0 && atoi(env) <= 100000)
		cycles = atoi(env);
	for (i = 0; i < cycles; i++) {
		if (i % 100 == 0) {
			fd = open("/dev/hmm_dmirror0", O_RDWR);
			ASSERT_LE(0, fd);
			area = migrate_area(fd, &m);
			close(fd);
			ASSERT_EQ(0, m.ret);
			ASSERT_NE(NULL, area);
		}
		ret = remove_module(REMOVE_SECS, &took);
		if (took > slowest)
			slowest = took;
		ASSERT_EQ(0, ret) {
			TH_LOG("cycle %d: removal: %s after %.2f s", i,
			       errname(-ret), took);
		}
		ret = insert_module(self->args);
		ASSERT_EQ(0, ret) {
			TH_LOG("cycle %d: insertion: %s", i, errname(-ret));
		}
		if (area) {
			bad += check_area(area);
			checked++;
			munmap(area, AREA_SIZE);
			area = NULL;
		}
	}
	note("%d load/unload cycles in %.1f s (%.1f ms each, slowest removal %.2f s); %d of them evicted 4 MiB of mapped device pages: %d bad page(s)\n",
	     cycles, now() - start, (now() - start) * 1000 / cycles, slowest,
	     checked, bad);
	ASSERT_EQ(0, bad);
}

TEST_F_TIMEOUT(load, refused_while_open, 60)
{
	double took;
	int fd, ret;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, fd);
	ret = syscall(SYS_delete_module, module_name(), O_NONBLOCK) ? errno : 0;
	note("removal with a file open: %s\n", ret ? errname(ret) : "ok");
	if (!ret)
		EXPECT_EQ(0, insert_module(self->args));
	ASSERT_TRUE(ret == EBUSY || ret == EAGAIN);
	ASSERT_TRUE(module_loaded());
	close(fd);
	ASSERT_EQ(0, remove_module(REMOVE_SECS, &took));
	ASSERT_EQ(0, insert_module(self->args));
}

TEST_HARNESS_MAIN
