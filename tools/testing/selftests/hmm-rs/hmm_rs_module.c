// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs module kselftests: rust_test_hmm is loaded and its build
 * mechanisms work (the module's own bindgen output and its C helpers
 * object both reached the Rust code).
 *
 * Runs with the module loaded; see scripts/plans/check.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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

TEST(module_is_loaded)
{
	struct stat st;

	ASSERT_EQ(0, stat("/sys/module/" MODULE_NAME, &st));
	ASSERT_TRUE(S_ISDIR(st.st_mode));
}

TEST(module_is_live)
{
	char state[32] = "";
	FILE *f = fopen("/sys/module/" MODULE_NAME "/initstate", "r");

	ASSERT_NE(NULL, f);
	ASSERT_NE(NULL, fgets(state, sizeof(state), f));
	fclose(f);
	ASSERT_EQ(0, strcmp(state, "live\n"));
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
