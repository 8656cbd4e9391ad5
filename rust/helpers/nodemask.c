// SPDX-License-Identifier: GPL-2.0

#include <linux/cpuset.h>
#include <linux/nodemask.h>

__rust_helper bool rust_helper_node_online(int nid)
{
	return node_online(nid);
}

__rust_helper int rust_helper_node_state(int node, enum node_states state)
{
	return node_state(node, state);
}

__rust_helper bool rust_helper_cpuset_current_mems_allowed_has(int node)
{
	return node_isset(node, cpuset_current_mems_allowed);
}
