/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * hmm-rs: the ioctls of /dev/hmm_dmirror* beyond lib/test_hmm_uapi.h,
 * whose ABI stays as it is (hmm-tests runs unchanged).
 *
 * HMM_RS_MIGRATE migrates a range in one direction chosen by the caller
 * and says, for every page that did not move, why not, and whether trying
 * again can help. The reasons are those the July 2020 review of
 * migrate_vma's select flags asked for; Documentation/migrate-reasons.rst
 * says how each is derived from kernel state, and which ones a module
 * cannot tell apart on 7.3.
 */
#ifndef _UAPI_HMM_RS_H
#define _UAPI_HMM_RS_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Source pages to select: the values of enum migrate_vma_direction. */
#define HMM_RS_SELECT_SYSTEM		(1U << 0)
#define HMM_RS_SELECT_DEVICE_PRIVATE	(1U << 1)
#define HMM_RS_SELECT_DEVICE_COHERENT	(1U << 2)
#define HMM_RS_SELECT_ALL		(HMM_RS_SELECT_SYSTEM |		\
					 HMM_RS_SELECT_DEVICE_PRIVATE |	\
					 HMM_RS_SELECT_DEVICE_COHERENT)

/* Where the selected pages go. */
#define HMM_RS_DST_DEVICE		0	/* this file's device */
#define HMM_RS_DST_SYSTEM		1	/* system memory */
#define HMM_RS_DST_NODE			2	/* system memory on NUMA node @node */

/*
 * Requests. FAULT: with HMM_RS_SELECT_SYSTEM only; what is not present
 * (swapped out, another owner's device-private page, never touched) is
 * faulted in for reading first, round by round, as a CPU read would
 * fault it, so that it migrates instead of staying NOT_PRESENT.
 */
#define HMM_RS_REQ_FAULT		(1U << 1)

/*
 * THP: without HMM_RS_REQ_THP a transparent huge page is
 * collected and moved page by page (split); with it, it is collected
 * whole and moved whole if a destination of its size can be had, else
 * page by page. Device-private huge pages always come back page by page
 * on 7.3 (a zap_huge_pmd() bug, see patches/README), and a selection of
 * both SYSTEM and DEVICE_PRIVATE pages would split the system ones: with
 * HMM_RS_REQ_THP it is EINVAL.
 */
#define HMM_RS_REQ_THP			(1U << 0)

/*
 * SRC_DEV: the device pages selected are those of /dev/hmm_dmirror<src_dev>
 * (another device of this driver), not this file's device. With
 * HMM_RS_DST_DEVICE that is a device-to-device move: no bounce through
 * system memory.
 */
#define HMM_RS_REQ_SRC_DEV		(1U << 2)

/*
 * NOT_ON_NODE: with HMM_RS_DST_NODE and HMM_RS_SELECT_SYSTEM, the filter
 * the review asked for, "migrate system memory not already on node X":
 * system pages already on @node stay (HMM_RS_ON_NODE), a huge page whole.
 * Without it, every selected page gets a new page on @node, including
 * those already there.
 */
#define HMM_RS_REQ_NOT_ON_NODE		(1U << 3)
#define HMM_RS_REQ_ALL			(HMM_RS_REQ_THP | HMM_RS_REQ_FAULT | \
					 HMM_RS_REQ_SRC_DEV | HMM_RS_REQ_NOT_ON_NODE)

/*
 * Per-page status: a reason, with HMM_RS_STATUS_RETRY set when the same
 * request can succeed later without anything else changing first, and
 * HMM_RS_STATUS_WHOLE when the page was collected as part of a huge page
 * taken whole (HMM_RS_REQ_THP) and moved, or stayed, with all of it.
 */
enum hmm_rs_reason {
	HMM_RS_MIGRATED = 0,	/* moved (or, a hole, populated) */
	/*
	 * Nothing the request selects is present: nothing mapped (when moving
	 * to a device, only outside anonymous mappings: there a hole is
	 * populated), a swapped-out page, a device-private page of another
	 * owner, or an entry in transition. A module cannot tell these apart
	 * on 7.3.
	 */
	HMM_RS_NOT_PRESENT = 1,
	HMM_RS_ZERO_PAGE = 2,		/* the shared zero page, SYSTEM not selected */
	HMM_RS_NOT_SELECTED = 3,	/* a page of a kind not selected */
	HMM_RS_OTHER_OWNER = 4,		/* a device page of another owner */
	HMM_RS_PINNED = 5,		/* pinned (FOLL_PIN): moves once unpinned */
	HMM_RS_BUSY = 6,		/* locked, extra references, not isolated */
	HMM_RS_SPLIT_FAILED = 7,	/* a huge page that could not be split */
	/*
	 * The driver gave it no destination for a cause of its own. This
	 * driver gives none only for want of memory (NO_MEMORY) or by the
	 * node filter (ON_NODE), so it never reports this one.
	 */
	HMM_RS_NO_DESTINATION = 8,
	HMM_RS_NO_MEMORY = 9,		/* no destination memory to be had */
	HMM_RS_REFUSED = 10,		/* migrate_vma_pages() did not move it */
	HMM_RS_FILE_BACKED = 11,	/* file-backed: cannot go to a device */
	HMM_RS_UNSUPPORTED = 12,	/* a mapping hmm cannot walk (special) */
	HMM_RS_ON_NODE = 13,		/* already on @node (HMM_RS_REQ_NOT_ON_NODE) */
	HMM_RS_NOT_REACHED = 63,	/* the call failed before this page */
	HMM_RS_NR_REASONS = 16,		/* room in counts[] */
};

#define HMM_RS_STATUS_REASON		0x3f
#define HMM_RS_STATUS_WHOLE		0x40
#define HMM_RS_STATUS_RETRY		0x80

/**
 * struct hmm_rs_migrate - HMM_RS_MIGRATE
 * @addr: in: start of the range, page aligned
 * @npages: in: pages in the range, not 0
 * @status: in: user address of @npages bytes for the per-page status, or 0;
 *	filled with HMM_RS_NOT_REACHED before anything moves (so an unwritable
 *	array fails with EFAULT and changes nothing, and after an error the
 *	pages the call did not get to say so)
 * @select: in: HMM_RS_SELECT_*, not 0
 * @dst: in: HMM_RS_DST_*
 * @flags: in: HMM_RS_REQ_*
 * @src_dev: in: with HMM_RS_REQ_SRC_DEV, the device whose pages to select;
 *	else 0
 * @node: in: with HMM_RS_DST_NODE, the NUMA node to move to; else 0
 * @reserved: in: 0
 * @migrated: out: pages moved (populated holes included)
 * @counts: out: pages per reason, counts[HMM_RS_MIGRATED] == migrated
 *
 * Directions: system to this device (HMM_RS_DST_DEVICE, @select ==
 * HMM_RS_SELECT_SYSTEM); another device's pages to this device
 * (HMM_RS_DST_DEVICE, device kinds only, HMM_RS_REQ_SRC_DEV); this
 * device's or, with HMM_RS_REQ_SRC_DEV, another device's pages back to
 * system memory (HMM_RS_DST_SYSTEM, device kinds only); any of the selected
 * kinds to system memory on @node (HMM_RS_DST_NODE: system to system
 * between nodes, device to a chosen node). HMM_RS_REQ_FAULT needs
 * HMM_RS_SELECT_SYSTEM. Pages on @node are allocated there or not at all
 * (HMM_RS_NO_MEMORY when the node is full); a hole is left a hole
 * (HMM_RS_NOT_PRESENT, or HMM_RS_ZERO_PAGE), as move_pages(2) leaves it;
 * a page of a file stays (HMM_RS_FILE_BACKED: 7.3's migrate_vma_pages()
 * cannot move one safely), and so does one under writeback (HMM_RS_BUSY).
 * HMM_RS_REQ_SRC_DEV selects device pages only: not with
 * HMM_RS_SELECT_SYSTEM.
 *
 * Errors: EINVAL for unknown bits, a nonzero @src_dev without
 * HMM_RS_REQ_SRC_DEV, @src_dev naming this file's device, a nonzero @node
 * without HMM_RS_DST_NODE or @reserved, HMM_RS_REQ_NOT_ON_NODE without
 * HMM_RS_DST_NODE and HMM_RS_SELECT_SYSTEM, a range that is not page
 * aligned, empty or overflowing, a selection the destination does not
 * take, and a range not covered by readable mappings; ENODEV for a
 * @src_dev that does not exist and a @node that does not exist or has no
 * memory (as move_pages(2)); EACCES for a @node the caller's cpuset does
 * not allow (as move_pages(2)); EFAULT for an unwritable status
 * array; EINTR when killed (pages already moved stay moved, and the
 * status says which).
 */
struct hmm_rs_migrate {
	__u64 addr;
	__u64 npages;
	__u64 status;
	__u32 select;
	__u32 dst;
	__u32 flags;
	__u32 src_dev;
	__u32 node;
	__u32 reserved;
	__u64 migrated;
	__u64 counts[HMM_RS_NR_REASONS];
};

#define HMM_RS_MIGRATE		_IOWR('H', 0x40, struct hmm_rs_migrate)

#endif /* _UAPI_HMM_RS_H */
