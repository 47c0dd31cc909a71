/* The tenant configuration file: a line-oriented parser over a buffer, and its loader. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/tenant_config.h"
#include "shm/segment.h"

/* A word of a line: bytes [start, start + len) of the text, at column `column`. */
struct word {
	const char *start;
	size_t len;
	uint32_t column;
};

struct parser {
	struct rs_tenant_config *config;
	struct rs_tenant_config_error *error;
	uint32_t capacity; /* of config->rules */
	uint32_t line;
	bool have_default;
};

static int fail(struct parser *parser, uint32_t column, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error: where, and why. Returns -EINVAL. */
static int fail(struct parser *parser, uint32_t column, const char *format, ...)
{
	struct rs_tenant_config_error *error = parser->error;
	error->line = parser->line;
	error->column = column;
	va_list args;
	va_start(args, format);
	vsnprintf(error->message, sizeof(error->message), format, args);
	va_end(args);
	return -EINVAL;
}

static bool word_is(const struct word *word, const char *text)
{
	return word->len == strlen(text) && memcmp(word->start, text, word->len) == 0;
}

/* At most this many bytes of a word go into a message. */
#define QUOTE(word) ((int)((word)->len < 40 ? (word)->len : 40)), (word)->start

static void rule_defaults(struct rs_tenant_rule *rule)
{
	memset(rule, 0, sizeof(*rule));
	rule->weight = 1.0;
}

/* An unsigned decimal in [min, max]: digits only, no sign, no spaces. */
static bool parse_u64(const char *text, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	uint64_t value = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		uint64_t digit = (uint64_t)(text[i] - '0');
		if (value > (UINT64_MAX - digit) / 10)
			return false;
		value = value * 10 + digit;
	}
	if (value < min || value > max)
		return false;
	*out = value;
	return true;
}

/* A positive decimal weight such as 2, 0.5 or 1e3 (no hex, inf or nan). */
static bool parse_weight(const char *text, size_t len, double *out)
{
	char copy[48];
	if (len == 0 || len >= sizeof(copy))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!strchr("0123456789.eE+-", text[i]) || text[i] == '\0')
			return false;
	memcpy(copy, text, len);
	copy[len] = '\0';
	char *end;
	errno = 0;
	double value = strtod(copy, &end);
	if (errno || end != copy + len || !isfinite(value) || !(value > 0) ||
	    value > RS_TENANT_CONFIG_MAX_WEIGHT)
		return false;
	*out = value;
	return true;
}

static int parse_uids(struct parser *parser, const struct word *value, struct rs_tenant_rule *rule)
{
	size_t i = 0;
	for (;;) {
		size_t start = i;
		while (i < value->len && value->start[i] != ',')
			i++;
		uint32_t column = value->column + (uint32_t)start;
		uint64_t uid;
		if (i == start)
			return fail(parser, column,
				    "uids: expected a uid (a comma-separated list)");
		if (!parse_u64(value->start + start, i - start, 0, (uid_t)-1 - 1, &uid))
			return fail(parser, column, "uids: '%.*s' is not a uid", (int)(i - start),
				    value->start + start);
		if (rule->n_uids == RS_TENANT_CONFIG_MAX_UIDS)
			return fail(parser, column, "uids: more than %d uids on one line",
				    RS_TENANT_CONFIG_MAX_UIDS);
		rule->uids[rule->n_uids++] = (uid_t)uid;
		if (i == value->len)
			return 0;
		i++; /* the comma */
	}
}

enum key { KEY_WEIGHT, KEY_MAX_CONNECTIONS, KEY_MAX_INFLIGHT, KEY_MAX_KV_BLOCKS, KEY_UIDS, N_KEYS };
static const char *const key_names[N_KEYS] = {"weight", "max_connections", "max_inflight",
					      "max_kv_blocks", "uids"};

/* One KEY=VALUE word of a tenant or default line. */
static int parse_setting(struct parser *parser, const struct word *word,
			 struct rs_tenant_rule *rule, bool seen[N_KEYS])
{
	const char *equals = memchr(word->start, '=', word->len);
	if (!equals)
		return fail(parser, word->column, "expected KEY=VALUE, got '%.*s'", QUOTE(word));
	struct word key = {word->start, (size_t)(equals - word->start), word->column};
	struct word value = {equals + 1, word->len - key.len - 1,
			     word->column + (uint32_t)key.len + 1};
	enum key k = N_KEYS;
	for (int i = 0; i < N_KEYS; i++)
		if (word_is(&key, key_names[i]))
			k = (enum key)i;
	if (k == N_KEYS)
		return fail(parser, key.column,
			    "unknown key '%.*s' (weight, max_connections, max_inflight, "
			    "max_kv_blocks or uids)",
			    QUOTE(&key));
	if (seen[k])
		return fail(parser, key.column, "%s given twice", key_names[k]);
	seen[k] = true;
	if (value.len == 0)
		return fail(parser, value.column, "%s: missing value", key_names[k]);
	uint64_t number = 0;
	switch (k) {
	case KEY_WEIGHT:
		if (!parse_weight(value.start, value.len, &rule->weight))
			return fail(parser, value.column,
				    "weight: '%.*s' is not a number in (0, %g]", QUOTE(&value),
				    RS_TENANT_CONFIG_MAX_WEIGHT);
		return 0;
	case KEY_UIDS:
		return parse_uids(parser, &value, rule);
	default:
		break;
	}
	if (!parse_u64(value.start, value.len, 1, UINT32_MAX, &number))
		return fail(parser, value.column, "%s: '%.*s' is not a whole number in [1, %u]",
			    key_names[k], QUOTE(&value), UINT32_MAX);
	if (k == KEY_MAX_CONNECTIONS)
		rule->max_connections = (uint32_t)number;
	else if (k == KEY_MAX_INFLIGHT)
		rule->max_inflight = (uint32_t)number;
	else
		rule->max_kv_blocks = (uint32_t)number;
	return 0;
}

/* The name of a tenant line, checked as the daemon checks a hello's. */
static int parse_name(struct parser *parser, const struct word *word, struct rs_tenant_rule *rule)
{
	if (word->len >= RS_TENANT_NAME_MAX)
		return fail(parser, word->column, "tenant name longer than %d bytes",
			    RS_TENANT_NAME_MAX - 1);
	memcpy(rule->name, word->start, word->len);
	rule->name[word->len] = '\0';
	if (!rs_tenant_name_valid(rule->name)) {
		size_t bad =
		    strspn(rule->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "0123456789._@:+-");
		return fail(parser, word->column + (uint32_t)bad,
			    "bad tenant name '%.*s': 1 to %d bytes of [A-Za-z0-9._@:+-]",
			    QUOTE(word), RS_TENANT_NAME_MAX - 1);
	}
	struct rs_tenant_config *config = parser->config;
	for (uint32_t i = 0; i < config->n_rules; i++)
		if (strcmp(config->rules[i].name, rule->name) == 0)
			return fail(parser, word->column, "tenant '%s' already defined on line %u",
				    rule->name, config->rules[i].line);
	return 0;
}

static int add_rule(struct parser *parser, const struct rs_tenant_rule *rule, uint32_t column)
{
	struct rs_tenant_config *config = parser->config;
	if (config->n_rules == RS_TENANT_CONFIG_MAX_TENANTS)
		return fail(parser, column, "more than %d tenant lines",
			    RS_TENANT_CONFIG_MAX_TENANTS);
	if (config->n_rules == parser->capacity) {
		uint32_t capacity = parser->capacity ? 2 * parser->capacity : 16;
		struct rs_tenant_rule *rules = realloc(config->rules, capacity * sizeof(*rules));
		if (!rules)
			return -ENOMEM;
		config->rules = rules;
		parser->capacity = capacity;
	}
	config->rules[config->n_rules++] = *rule;
	return 0;
}

/* The next word of the line at or after *pos; false at the end or at a comment. */
static bool next_word(const char *line, size_t len, size_t *pos, struct word *word)
{
	size_t i = *pos;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len || line[i] == '#')
		return false;
	size_t start = i;
	while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '#')
		i++;
	*word = (struct word){line + start, i - start, (uint32_t)start + 1};
	*pos = i;
	return true;
}

/* One line, without its newline. */
static int parse_line(struct parser *parser, const char *line, size_t len)
{
	/* A CRLF file reads as well as an LF one. */
	if (len && line[len - 1] == '\r')
		len--;
	/* Comments may hold anything printable; control bytes are refused everywhere. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail(parser, (uint32_t)i + 1, "unexpected byte 0x%02x", c);
	}
	size_t pos = 0;
	struct word directive, word;
	if (!next_word(line, len, &pos, &directive))
		return 0; /* blank, or a comment */

	struct rs_tenant_rule rule;
	rule_defaults(&rule);
	rule.line = parser->line;
	bool is_default = word_is(&directive, "default");
	if (is_default) {
		if (parser->have_default)
			return fail(parser, directive.column,
				    "a second default line (the first is on line %u)",
				    parser->config->fallback.line);
	} else if (word_is(&directive, "tenant")) {
		if (!next_word(line, len, &pos, &word))
			return fail(parser, directive.column + (uint32_t)directive.len,
				    "tenant: missing its name");
		int ret = parse_name(parser, &word, &rule);
		if (ret)
			return ret;
	} else {
		return fail(parser, directive.column,
			    "unknown directive '%.*s' (expected tenant or default)",
			    QUOTE(&directive));
	}
	bool seen[N_KEYS] = {false};
	while (next_word(line, len, &pos, &word)) {
		int ret = parse_setting(parser, &word, &rule, seen);
		if (ret)
			return ret;
	}
	if (is_default) {
		parser->config->fallback = rule;
		parser->have_default = true;
		return 0;
	}
	return add_rule(parser, &rule, directive.column);
}

int rs_tenant_config_default(struct rs_tenant_config **out)
{
	struct rs_tenant_config *config = calloc(1, sizeof(*config));
	if (!config)
		return -ENOMEM;
	rule_defaults(&config->fallback);
	*out = config;
	return 0;
}

int rs_tenant_config_parse(const char *text, size_t len, struct rs_tenant_config **out,
			   struct rs_tenant_config_error *error)
{
	memset(error, 0, sizeof(*error));
	struct parser parser = {.error = error};
	if (len > RS_TENANT_CONFIG_MAX_BYTES)
		return fail(&parser, 0, "larger than %u bytes", RS_TENANT_CONFIG_MAX_BYTES);
	int ret = rs_tenant_config_default(&parser.config);
	if (ret)
		return ret;
	const char *end = text + len;
	for (const char *line = text; line < end;) {
		const char *newline = memchr(line, '\n', (size_t)(end - line));
		size_t line_len = newline ? (size_t)(newline - line) : (size_t)(end - line);
		parser.line++;
		ret = parse_line(&parser, line, line_len);
		if (ret) {
			if (ret == -ENOMEM)
				snprintf(error->message, sizeof(error->message), "out of memory");
			rs_tenant_config_free(parser.config);
			return ret;
		}
		line += line_len + (newline != NULL);
	}
	*out = parser.config;
	return 0;
}

int rs_tenant_config_load(const char *path, struct rs_tenant_config **out, char *message,
			  size_t message_size)
{
	char dummy[1];
	if (!message) {
		message = dummy;
		message_size = sizeof(dummy);
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int ret = -errno;
		snprintf(message, message_size, "%s: %s", path, strerror(errno));
		return ret;
	}
	/* One byte more than allowed: a larger file is refused, not truncated. */
	size_t cap = RS_TENANT_CONFIG_MAX_BYTES + 1, len = 0;
	char *text = malloc(cap);
	if (!text) {
		close(fd);
		snprintf(message, message_size, "%s: out of memory", path);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, text + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;
			snprintf(message, message_size, "%s: %s", path, strerror(errno));
			free(text);
			close(fd);
			return ret;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap) {
			snprintf(message, message_size, "%s: larger than %u bytes", path,
				 RS_TENANT_CONFIG_MAX_BYTES);
			free(text);
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	struct rs_tenant_config_error error;
	int ret = rs_tenant_config_parse(text, len, out, &error);
	free(text);
	if (ret == -EINVAL)
		snprintf(message, message_size, "%s:%u:%u: %s", path, error.line, error.column,
			 error.message);
	else if (ret)
		snprintf(message, message_size, "%s: %s", path, strerror(-ret));
	return ret;
}

void rs_tenant_config_free(struct rs_tenant_config *config)
{
	if (!config)
		return;
	free(config->rules);
	free(config);
}

const struct rs_tenant_rule *rs_tenant_config_lookup(const struct rs_tenant_config *config,
						     const char *name)
{
	for (uint32_t i = 0; i < config->n_rules; i++)
		if (strcmp(config->rules[i].name, name) == 0)
			return &config->rules[i];
	return &config->fallback;
}

bool rs_tenant_rule_allows(const struct rs_tenant_rule *rule, uid_t uid)
{
	if (rule->n_uids == 0)
		return true;
	for (uint32_t i = 0; i < rule->n_uids; i++)
		if (rule->uids[i] == uid)
			return true;
	return false;
}
