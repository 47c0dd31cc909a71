/* The OpenAI HTTP API on libmicrohttpd: routes, request bodies, JSON answers, server-sent
 * event streams and OpenAI's error shape. */
#ifndef RS_OPENAI_HTTP_H
#define RS_OPENAI_HTTP_H

#include <microhttpd.h>

#include "tools/ringserve-openai/config.h"

/* Start serving config on its listen address (thread per connection). *port_out is the
 * port bound. Returns the daemon, or NULL (a message on stderr). */
struct MHD_Daemon *http_start(const struct bridge_config *config, unsigned *port_out);

#endif
