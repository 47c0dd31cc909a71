/* The bridge's configuration file, JSON (docs/client-http.md):
 *
 *   {
 *     "listen": "127.0.0.1:8080",          IPv4 address and port (port 0: any free one)
 *     "socket": "/run/ringserve/ringserve.sock",   ringserved's socket (optional)
 *     "model": "ringserve",                the model id clients name (optional)
 *     "max_body_bytes": 1048576,           larger request bodies get 413 (optional)
 *     "keys": {"sk-web-1": "web", "sk-batch": "batch"}   API key -> ringserve tenant
 *   }
 *
 * Several keys may name one tenant; they then share its connection and its fair share. */
#ifndef RS_OPENAI_CONFIG_H
#define RS_OPENAI_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "tools/ringserve-openai/upstream.h"

#define BRIDGE_DEFAULT_MAX_BODY (1u << 20)
#define BRIDGE_MAX_KEYS		1024

struct bridge_key {
	char *key;
	struct tenant_link *link;
};

struct bridge_config {
	char listen_host[64];
	uint16_t listen_port;
	char *socket_path; /* NULL: rs_connect's default */
	char *model_id;
	size_t max_body_bytes;
	struct bridge_key *keys;
	size_t n_keys;
	struct tenant_link *links; /* one per distinct tenant */
	size_t n_links;
};

/* Load path; on failure write a message into error and return a negative errno. */
int bridge_config_load(const char *path, struct bridge_config *config, char *error,
		       size_t error_size);

/* Apply a "HOST:PORT" listen address. Returns 0 or -EINVAL. */
int bridge_config_set_listen(struct bridge_config *config, const char *address);

/* The tenant of a key, in constant time per key; NULL for an unknown key. */
struct tenant_link *bridge_config_find_key(const struct bridge_config *config, const char *key);

#endif
