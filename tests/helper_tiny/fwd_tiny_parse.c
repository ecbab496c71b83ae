// SPDX-License-Identifier: GPL-2.0-or-later
#include "fwd_tiny_parse.h"

#include <errno.h>
#include <string.h>

int fwd_tiny_parse(const uint8_t *data, size_t len)
{
	static const char verb[] = "OPEN ";
	size_t i = sizeof(verb) - 1;
	long port = 0;

	if (len > 0 && data[len - 1] == '\n')
		len--;
	if (len > 0 && data[len - 1] == '\r')
		len--;
	if (len <= i || len > i + 5 || memcmp(data, verb, i))
		return -EINVAL;
	for (; i < len; i++) {
		if (data[i] < '0' || data[i] > '9')
			return -EINVAL;
		port = port * 10 + (data[i] - '0');
	}
	return port >= 1 && port <= 65535 ? (int)port : -EINVAL;
}
