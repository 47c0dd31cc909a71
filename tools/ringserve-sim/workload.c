/* Workloads: length distributions, generated arrivals, and trace files (sim.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ringserve-sim/sim.h"

uint64_t sim_random(uint64_t *rng)
{
	uint64_t z = (*rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

double sim_random_unit(uint64_t *rng)
{
	return ((sim_random(rng) >> 11) + 1) * 0x1.0p-53;
}

static int parse_u32(const char *s, char **end, uint32_t *out)
{
	errno = 0;
	unsigned long v = strtoul(s, end, 10);
	if (errno || *end == s || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int sim_lengths_parse(const char *spec, struct sim_lengths *out, char *err, size_t err_size)
{
	memset(out, 0, sizeof(*out));
	char *end = NULL;
	if (strncmp(spec, "fixed:", 6) == 0) {
		out->kind = LEN_FIXED;
		if (parse_u32(spec + 6, &end, &out->a) == 0 && !*end && out->a)
			return 0;
	} else if (strncmp(spec, "uniform:", 8) == 0) {
		out->kind = LEN_UNIFORM;
		if (parse_u32(spec + 8, &end, &out->a) == 0 && *end == ':' &&
		    parse_u32(end + 1, &end, &out->b) == 0 && !*end && out->a && out->a <= out->b)
			return 0;
	} else if (strncmp(spec, "exp:", 4) == 0) {
		out->kind = LEN_EXP;
		errno = 0;
		out->mean = strtod(spec + 4, &end);
		if (!errno && end != spec + 4 && out->mean >= 1.0 &&
		    (!*end || (*end == ':' && parse_u32(end + 1, &end, &out->b) == 0 && !*end &&
			       out->b)))
			return 0;
	} else if (strncmp(spec, "empirical:", 10) == 0) {
		out->kind = LEN_EMPIRICAL;
		FILE *f = fopen(spec + 10, "r");
		if (!f) {
			snprintf(err, err_size, "%s: %s", spec + 10, strerror(errno));
			return -errno;
		}
		uint32_t cap = 0;
		unsigned long v;
		int rc = 0;
		while (rc == 0 && fscanf(f, "%lu", &v) == 1) {
			if (v == 0 || v > UINT32_MAX) {
				rc = -EINVAL;
				break;
			}
			if (out->n_values == cap) {
				cap = cap ? 2 * cap : 1024;
				uint32_t *grown = realloc(out->values, cap * sizeof(uint32_t));
				if (!grown) {
					rc = -ENOMEM;
					break;
				}
				out->values = grown;
			}
			out->values[out->n_values++] = (uint32_t)v;
		}
		if (rc == 0 && (!feof(f) || out->n_values == 0))
			rc = -EINVAL;
		fclose(f);
		if (rc == 0)
			return 0;
		sim_lengths_free(out);
		snprintf(err, err_size, "%s: %s", spec + 10,
			 rc == -ENOMEM ? "out of memory" : "not a list of lengths >= 1");
		return rc;
	}
	snprintf(err, err_size,
		 "bad length distribution \"%s\" (fixed:N, uniform:A:B, exp:MEAN[:MAX], "
		 "empirical:FILE; lengths >= 1)",
		 spec);
	return -EINVAL;
}

void sim_lengths_free(struct sim_lengths *lengths)
{
	free(lengths->values);
	lengths->values = NULL;
	lengths->n_values = 0;
}

uint32_t sim_lengths_draw(const struct sim_lengths *l, uint64_t *rng)
{
	switch (l->kind) {
	case LEN_FIXED:
		return l->a;
	case LEN_UNIFORM:
		return l->a + (uint32_t)(sim_random(rng) % (l->b - l->a + 1));
	case LEN_EXP: {
		double v = floor(-l->mean * log(sim_random_unit(rng)) + 0.5);
		if (v < 1.0)
			v = 1.0;
		if (l->b && v > l->b)
			v = l->b;
		return (uint32_t)v;
	}
	case LEN_EMPIRICAL:
		return l->values[sim_random(rng) % l->n_values];
	}
	return 1;
}

double sim_lengths_mean(const struct sim_lengths *l)
{
	switch (l->kind) {
	case LEN_FIXED:
		return l->a;
	case LEN_UNIFORM:
		return (l->a + (double)l->b) / 2.0;
	case LEN_EXP:
		return l->mean; /* before rounding and the cap */
	case LEN_EMPIRICAL: {
		double sum = 0;
		for (uint32_t i = 0; i < l->n_values; i++)
			sum += l->values[i];
		return sum / l->n_values;
	}
	}
	return 0;
}

void sim_workload_generator(struct sim_workload *w, const struct sim_generator_config *gen)
{
	memset(w, 0, sizeof(*w));
	w->gen = gen;
	w->rng = gen->seed;
	w->n_tenants = gen->tenants;
	for (uint32_t t = 0; t < gen->tenants; t++) {
		snprintf(w->tenant_names[t], sizeof(w->tenant_names[t]), "t%u", t);
		w->tenant_weights[t] = 1.0;
	}
}

static bool generate(struct sim_workload *w, struct sim_request_spec *out)
{
	const struct sim_generator_config *g = w->gen;
	if (w->produced == g->requests)
		return false;
	w->produced++;
	if (g->rate > 0)
		w->clock_ns += (uint64_t)(-log(sim_random_unit(&w->rng)) / g->rate * 1e9);
	/* Tenant 0 weighs skew, the others 1. */
	double total = g->skew + (g->tenants - 1), pick = sim_random_unit(&w->rng) * total;
	uint32_t tenant = 0;
	if (pick > g->skew)
		tenant = 1 + (uint32_t)((pick - g->skew) / 1.0);
	if (tenant >= g->tenants)
		tenant = g->tenants - 1;
	*out = (struct sim_request_spec){.arrival_ns = w->clock_ns, .tenant = tenant,
					 .prefix = UINT32_MAX};
	if (g->prefixes) {
		out->prefix = tenant * g->prefixes + (uint32_t)(sim_random(&w->rng) % g->prefixes);
		/* A prefix's length is a property of the prefix: drawn from its own seed. */
		uint64_t prefix_rng = g->seed ^ (0x5851f42d4c957f2dull * (out->prefix + 1));
		out->prefix_len = sim_lengths_draw(&g->prefix_len, &prefix_rng);
	}
	out->prompt_len = out->prefix_len + sim_lengths_draw(&g->suffix_len, &w->rng);
	out->output_len = sim_lengths_draw(&g->output_len, &w->rng);
	out->output_hint = g->hint ? out->output_len : 0;
	return true;
}

bool sim_workload_next(struct sim_workload *w, struct sim_request_spec *out)
{
	if (w->gen)
		return generate(w, out);
	if (w->produced == w->n_trace)
		return false;
	*out = w->trace[w->produced++];
	return true;
}

void sim_workload_free(struct sim_workload *w)
{
	free(w->trace);
	w->trace = NULL;
}

int sim_workload_write_trace(struct sim_workload *w, FILE *out)
{
	struct sim_request_spec r;
	while (sim_workload_next(w, &r)) {
		fprintf(out, "{\"arrival\": %.9f, \"tenant\": \"%s\", ", r.arrival_ns / 1e9,
			w->tenant_names[r.tenant]);
		if (r.prefix != UINT32_MAX)
			fprintf(out, "\"prefix\": %u, \"prefix_len\": %u, ", r.prefix, r.prefix_len);
		fprintf(out, "\"prompt\": %u, \"output\": %u", r.prompt_len, r.output_len);
		if (r.output_hint)
			fprintf(out, ", \"hint\": %u", r.output_hint);
		fprintf(out, "}\n");
	}
	return ferror(out) ? -EIO : 0;
}

/* --- trace files: one flat JSON object per line ------------------------------------------- */

struct trace_line {
	const char *p;
	const char *why; /* set on the first error */
};

static void skip_space(struct trace_line *t)
{
	while (*t->p == ' ' || *t->p == '\t' || *t->p == '\r')
		t->p++;
}

/* A JSON string without escapes other than \" and \\, into buf. */
static bool parse_string(struct trace_line *t, char *buf, size_t size)
{
	if (*t->p != '"') {
		t->why = "expected a string";
		return false;
	}
	size_t n = 0;
	for (t->p++; *t->p != '"'; t->p++) {
		if (!*t->p || *t->p == '\n') {
			t->why = "unterminated string";
			return false;
		}
		if (*t->p == '\\' && (t->p[1] == '"' || t->p[1] == '\\'))
			t->p++;
		else if (*t->p == '\\') {
			t->why = "unsupported escape in a string";
			return false;
		}
		if (n + 1 >= size) {
			t->why = "string too long";
			return false;
		}
		buf[n++] = *t->p;
	}
	t->p++;
	buf[n] = 0;
	return true;
}

static bool parse_number(struct trace_line *t, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(t->p, &end);
	if (end == t->p || errno || !isfinite(*out)) {
		t->why = "expected a number";
		return false;
	}
	t->p = end;
	return true;
}

static bool whole(double v, double max)
{
	return v >= 0 && v <= max && v == floor(v);
}

/* The line's fields into r (tenant by name through w's table). */
static bool parse_trace_line(struct trace_line *t, struct sim_workload *w,
			     struct sim_request_spec *r)
{
	bool have_arrival = false, have_tenant = false, have_prompt = false, have_output = false;
	bool have_prefix = false;
	double prefix = 0;
	*r = (struct sim_request_spec){.prefix = UINT32_MAX};
	skip_space(t);
	if (*t->p != '{') {
		t->why = "expected {";
		return false;
	}
	t->p++;
	for (bool first = true;; first = false) {
		skip_space(t);
		if (*t->p == '}' && first) {
			t->p++;
			break;
		}
		char key[32], name[32];
		if (!parse_string(t, key, sizeof(key)))
			return false;
		skip_space(t);
		if (*t->p++ != ':') {
			t->why = "expected :";
			return false;
		}
		skip_space(t);
		double v = 0;
		if (strcmp(key, "tenant") == 0) {
			if (!parse_string(t, name, sizeof(name)))
				return false;
			uint32_t i = 0;
			while (i < w->n_tenants && strcmp(w->tenant_names[i], name) != 0)
				i++;
			if (i == w->n_tenants) {
				if (i == SIM_MAX_TENANTS) {
					t->why = "too many tenants";
					return false;
				}
				snprintf(w->tenant_names[i], sizeof(w->tenant_names[i]), "%s", name);
				w->tenant_weights[i] = 1.0;
				w->n_tenants++;
			}
			r->tenant = i;
			have_tenant = true;
		} else if (!parse_number(t, &v)) {
			return false;
		} else if (strcmp(key, "arrival") == 0 && v >= 0 && v < 1e9) {
			r->arrival_ns = (uint64_t)(v * 1e9 + 0.5);
			have_arrival = true;
		} else if (strcmp(key, "prefix") == 0 && whole(v, UINT32_MAX - 1)) {
			prefix = v;
			have_prefix = true;
		} else if (strcmp(key, "prefix_len") == 0 && whole(v, 1 << 24)) {
			r->prefix_len = (uint32_t)v;
		} else if (strcmp(key, "prompt") == 0 && whole(v, 1 << 24) && v >= 1) {
			r->prompt_len = (uint32_t)v;
			have_prompt = true;
		} else if (strcmp(key, "output") == 0 && whole(v, 1 << 24) && v >= 1) {
			r->output_len = (uint32_t)v;
			have_output = true;
		} else if (strcmp(key, "hint") == 0 && whole(v, 1 << 24)) {
			r->output_hint = (uint32_t)v;
		} else {
			t->why = "unknown key or value out of range";
			return false;
		}
		skip_space(t);
		if (*t->p == ',') {
			t->p++;
			continue;
		}
		if (*t->p != '}') {
			t->why = "expected , or }";
			return false;
		}
		t->p++;
		break;
	}
	skip_space(t);
	if (*t->p && *t->p != '\n') {
		t->why = "text after the object";
		return false;
	}
	if (!have_arrival || !have_tenant || !have_prompt || !have_output) {
		t->why = "arrival, tenant, prompt and output are required";
		return false;
	}
	if (have_prefix)
		r->prefix = (uint32_t)prefix;
	if (r->prefix_len > r->prompt_len || (r->prefix_len && !have_prefix)) {
		t->why = "prefix_len needs a prefix and may not exceed prompt";
		return false;
	}
	return true;
}

int sim_workload_trace(struct sim_workload *w, const char *path, char *err, size_t err_size)
{
	memset(w, 0, sizeof(*w));
	FILE *f = fopen(path, "r");
	if (!f) {
		int rc = -errno;
		snprintf(err, err_size, "%s: %s", path, strerror(errno));
		return rc;
	}
	char *line = NULL;
	size_t cap = 0, n_cap = 0;
	uint64_t number = 0;
	int rc = 0;
	while (getline(&line, &cap, f) >= 0) {
		number++;
		struct trace_line t = {.p = line};
		skip_space(&t);
		if (!*t.p || *t.p == '\n')
			continue; /* blank */
		struct sim_request_spec r;
		if (!parse_trace_line(&t, w, &r)) {
			snprintf(err, err_size, "%s:%llu: %s (column %ld)", path,
				 (unsigned long long)number, t.why, (long)(t.p - line) + 1);
			rc = -EINVAL;
			break;
		}
		if (w->n_trace && r.arrival_ns < w->trace[w->n_trace - 1].arrival_ns) {
			snprintf(err, err_size, "%s:%llu: arrivals must not go back in time", path,
				 (unsigned long long)number);
			rc = -EINVAL;
			break;
		}
		if (w->n_trace == n_cap) {
			n_cap = n_cap ? 2 * n_cap : 4096;
			struct sim_request_spec *grown = realloc(w->trace, n_cap * sizeof(*grown));
			if (!grown) {
				snprintf(err, err_size, "%s: out of memory", path);
				rc = -ENOMEM;
				break;
			}
			w->trace = grown;
		}
		w->trace[w->n_trace++] = r;
	}
	free(line);
	if (rc == 0 && ferror(f)) {
		snprintf(err, err_size, "%s: read error", path);
		rc = -EIO;
	}
	fclose(f);
	if (rc == 0 && w->n_trace == 0) {
		snprintf(err, err_size, "%s: no requests", path);
		rc = -EINVAL;
	}
	if (rc)
		sim_workload_free(w);
	return rc;
}
