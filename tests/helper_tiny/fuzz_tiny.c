// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the "tiny" test helper's parser: a port in range, or -EINVAL. */
#include "fwd_tiny_parse.h"

#include <errno.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int r = fwd_tiny_parse(data, size);

	if (r != -EINVAL && (r < 1 || r > 65535))
		abort();
	return 0;
}
