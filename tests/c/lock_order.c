// SPDX-License-Identifier: GPL-2.0-or-later
/* Drives the debug lock-order checker (fwd_lock.c built with FWD_DEBUG):
 *   lock_order ok        shard 1 -> shard 5 -> helper 0 -> expect: allowed, exits 0
 *   lock_order reverse   shard 5 -> shard 1: must abort with a lock order message
 *   lock_order expect    expect -> shard 0: must abort (the expectation lock comes last) */
#include "fwd_lock.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	struct fwd_lock shard[8], helper, expect;
	const char *what = argc > 1 ? argv[1] : "ok";

	for (unsigned i = 0; i < 8; i++)
		fwd_lock_init(&shard[i], FWD_LOCK_SHARD, i);
	fwd_lock_init(&helper, FWD_LOCK_HELPER, 0);
	fwd_lock_init(&expect, FWD_LOCK_EXPECT, 0);
	if (!strcmp(what, "ok")) {
		fwd_lock(&shard[1]);
		fwd_lock(&shard[5]);
		fwd_lock(&helper);
		fwd_lock(&expect);
		fwd_unlock(&expect);
		fwd_unlock(&helper);
		fwd_unlock(&shard[5]);
		fwd_unlock(&shard[1]);
	} else if (!strcmp(what, "reverse")) {
		fwd_lock(&shard[5]);
		fwd_lock(&shard[1]);
	} else if (!strcmp(what, "expect")) {
		fwd_lock(&expect);
		fwd_lock(&shard[0]);
	}
	puts("done");
	return 0;
}
