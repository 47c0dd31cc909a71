/* The bridge's JSON configuration (config.h), read with jansson. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ringserve-openai/config.h"

int bridge_config_set_listen(struct bridge_config *config, const char *address)
{
	const char *colon = strrchr(address, ':');
	if (!colon || (size_t)(colon - address) >= sizeof(config->listen_host))
		return -EINVAL;
	char host[sizeof(config->listen_host)];
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	struct in_addr addr;
	if (inet_pton(AF_INET, host, &addr) != 1)
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port > 65535)
		return -EINVAL;
	strcpy(config->listen_host, host);
	config->listen_port = (uint16_t)port;
	return 0;
}

/* ringserve's tenant names: 1 to 63 bytes of [A-Za-z0-9._@:+-] (rs_connect_options). */
static int tenant_name_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 63)
		return 0;
	return strspn(name,
		      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@:+-") ==
	       len;
}

static struct tenant_link *link_for(struct bridge_config *config, const char *tenant)
{
	for (size_t i = 0; i < config->n_links; i++)
		if (strcmp(config->links[i].tenant, tenant) == 0)
			return &config->links[i];
	struct tenant_link *link = &config->links[config->n_links++];
	tenant_link_init(link, tenant, config->socket_path);
	return link;
}

int bridge_config_load(const char *path, struct bridge_config *config, char *error,
		       size_t error_size)
{
	memset(config, 0, sizeof(*config));
	strcpy(config->listen_host, "127.0.0.1");
	config->listen_port = 8080;
	config->max_body_bytes = BRIDGE_DEFAULT_MAX_BODY;
	json_error_t json_error;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &json_error);
	if (!root) {
		snprintf(error, error_size, "%s:%d:%d: %s", path, json_error.line,
			 json_error.column, json_error.text);
		return -EINVAL;
	}
	int ret = -EINVAL;
	const char *listen = NULL, *socket_path = NULL, *model = "ringserve";
	json_int_t max_body = BRIDGE_DEFAULT_MAX_BODY;
	json_t *keys = NULL;
	if (!json_is_object(root) ||
	    json_unpack_ex(root, &json_error, JSON_STRICT, "{s?s, s?s, s?s, s?I, s:o}", "listen",
			   &listen, "socket", &socket_path, "model", &model, "max_body_bytes",
			   &max_body, "keys", &keys) != 0) {
		snprintf(error, error_size, "%s: %s", path,
			 json_is_object(root) ? json_error.text : "not a JSON object");
		goto out;
	}
	if (listen && bridge_config_set_listen(config, listen) < 0) {
		snprintf(error, error_size, "%s: listen: '%s' is not IPv4-ADDRESS:PORT", path,
			 listen);
		goto out;
	}
	if (max_body < 1024 || max_body > (1 << 30)) {
		snprintf(error, error_size, "%s: max_body_bytes: 1024 .. 1 GiB", path);
		goto out;
	}
	config->max_body_bytes = (size_t)max_body;
	if (!json_is_object(keys) || json_object_size(keys) == 0 ||
	    json_object_size(keys) > BRIDGE_MAX_KEYS) {
		snprintf(error, error_size, "%s: keys: an object of 1 to %d \"key\": \"tenant\"",
			 path, BRIDGE_MAX_KEYS);
		goto out;
	}
	config->socket_path = socket_path ? strdup(socket_path) : NULL;
	config->model_id = strdup(model);
	size_t n = json_object_size(keys);
	config->keys = calloc(n, sizeof(*config->keys));
	config->links = calloc(n, sizeof(*config->links));
	if (!config->model_id || (socket_path && !config->socket_path) || !config->keys ||
	    !config->links) {
		ret = -ENOMEM;
		snprintf(error, error_size, "out of memory");
		goto out;
	}
	const char *key;
	json_t *tenant;
	json_object_foreach(keys, key, tenant)
	{
		if (!json_is_string(tenant) || !tenant_name_valid(json_string_value(tenant))) {
			snprintf(
			    error, error_size,
			    "%s: keys: \"%s\": the tenant must be 1 to 63 of [A-Za-z0-9._@:+-]",
			    path, key);
			goto out;
		}
		if (strlen(key) < 8) {
			snprintf(error, error_size, "%s: keys: a key needs 8 characters or more",
				 path);
			goto out;
		}
		config->keys[config->n_keys].key = strdup(key);
		if (!config->keys[config->n_keys].key) {
			ret = -ENOMEM;
			goto out;
		}
		config->keys[config->n_keys].link = link_for(config, json_string_value(tenant));
		config->n_keys++;
	}
	ret = 0;
out:
	json_decref(root);
	return ret;
}

/* Compare without an early exit, so the time says nothing about where a guess differs. */
static int same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;
	for (size_t i = 0; i < la; i++)
		diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
	return diff == 0;
}

struct tenant_link *bridge_config_find_key(const struct bridge_config *config, const char *key)
{
	struct tenant_link *found = NULL;
	for (size_t i = 0; i < config->n_keys; i++)
		if (same_secret(key, config->keys[i].key))
			found = config->keys[i].link;
	return found;
}
