// SPDX-License-Identifier: GPL-2.0

#include <linux/nodemask.h>

__rust_helper bool rust_helper_node_online(int nid)
{
	return node_online(nid);
}
