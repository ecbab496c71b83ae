/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The "tiny" test helper's parser: one line "OPEN <port>" (optionally ending in LF or CRLF). */
#ifndef FWD_TINY_PARSE_H
#define FWD_TINY_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* The port (1..65535), or -EINVAL for anything else.  Reads only data[0..len). */
int fwd_tiny_parse(const uint8_t *data, size_t len);

#endif
