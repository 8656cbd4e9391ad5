// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs module kselftests: rust_test_hmm registers its devices, holds
 * itself while a file is open, and its build mechanisms work (the module's
 * own bindgen output and its C helpers object both reached the Rust code).
 *
 * Runs with the module loaded; see scripts/plans/check.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kselftest_harness.h"

#define MODULE_NAME "rust_test_hmm"

/* Finds a kernel log line containing @needle; copies it to @line. */
static int kmsg_find(const char *needle, char *line, size_t len)
{
	char buf[1024];
	int fd, found = 0;
	ssize_t n;

	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	/* Each read returns one record; EAGAIN at the end of the buffer. */
	while ((n = read(fd, buf, sizeof(buf) - 1)) != 0) {
		if (n < 0) {
			if (errno == EPIPE)	/* overwritten record: go on */
				continue;
			break;
		}
		buf[n] = '\0';
		if (strstr(buf, needle)) {
			snprintf(line, len, "%s", buf);
			found = 1;
		}
	}
	close(fd);
	return found;
}

/* Reads /sys/module/rust_test_hmm/refcnt; -1 if it cannot. */
static long module_refcnt(void)
{
	FILE *f = fopen("/sys/module/" MODULE_NAME "/refcnt", "r");
	long n = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &n) != 1)
		n = -1;
	fclose(f);
	return n;
}

/*
 * The devices are registered: each /dev/hmm_dmirror<N> the module makes
 * is a misc character device that opens, two without device-coherent
 * memory and four with it (the plan gives spm_addr_dev0/1 when
 * HMM_RS_COHERENT=1 is set for this test).
 */
TEST(devices_are_registered)
{
	const char *coherent = getenv("HMM_RS_COHERENT");
	int n = coherent && !strcmp(coherent, "1") ? 4 : 2;
	char path[64];
	struct stat st;
	int i, fd;

	for (i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", i);
		if (i >= n) {
			ASSERT_NE(0, stat(path, &st));
			continue;
		}
		ASSERT_EQ(0, stat(path, &st));
		ASSERT_TRUE(S_ISCHR(st.st_mode));
		fd = open(path, O_RDWR);
		ASSERT_LE(0, fd);
		close(fd);
	}
}

/*
 * An open file holds a reference on the module, so that it cannot be
 * unloaded while its file operations may still run (a missing .owner in
 * the misc device's file operations would let rmmod free the code under
 * an open file).
 */
TEST(open_files_hold_the_module)
{
	long before = module_refcnt();
	int fd;

	ASSERT_LE(0, before);
	fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, fd);
	ASSERT_EQ(before + 1, module_refcnt());
	close(fd);
	ASSERT_EQ(before, module_refcnt());
}

/*
 * The module logs one value from its bindgen output (MIGRATE_PFN_VALID,
 * 1UL << 0 in linux/migrate.h) and one computed by its C helpers object
 * (migrate_pfn(1) == 1 << MIGRATE_PFN_SHIFT | MIGRATE_PFN_VALID == 0x41).
 */
TEST(bindgen_and_helpers_reach_rust)
{
	char line[1024];

	ASSERT_EQ(1, kmsg_find(MODULE_NAME ": loaded (", line, sizeof(line)));
	TH_LOG("%s", line);
	ASSERT_NE(NULL, strstr(line, "MIGRATE_PFN_VALID = 0x1;"));
	ASSERT_NE(NULL, strstr(line, "migrate_pfn(1) = 0x41)"));
}

TEST_HARNESS_MAIN
