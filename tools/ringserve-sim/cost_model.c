/* The step cost model: its features, least-squares fit, file format and calibration on
 * the CPU or CUDA engine (sim.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/sched/step_shape.h"
#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "tools/ringserve-sim/sim.h"

void sim_step_shape_of(const struct rs_step_plan *plan, struct sim_step_shape *out)
{
	struct rs_step_shape shape;
	rs_step_shape_of(plan->steps, plan->n, &shape);
	*out = (struct sim_step_shape){shape.tokens, shape.rows, shape.pairs};
}

double sim_cost_seconds(const struct sim_cost_model *m, const struct sim_step_shape *s)
{
	double t = m->base_s + m->per_token_s * s->tokens + m->per_row_s * s->rows +
		   m->per_pair_s * s->pairs;
	return t > 0 ? t : 0;
}

enum { PARAMS = 4 };

static void features(const struct sim_step_shape *s, double *f)
{
	f[0] = 1.0;
	f[1] = s->tokens;
	f[2] = s->rows;
	f[3] = s->pairs;
}

/* Solve a x = b (PARAMS unknowns) by Gaussian elimination with partial pivoting. */
static bool solve(double a[PARAMS][PARAMS], double *b, double *x)
{
	for (int c = 0; c < PARAMS; c++) {
		int pivot = c;
		for (int r = c + 1; r < PARAMS; r++)
			if (fabs(a[r][c]) > fabs(a[pivot][c]))
				pivot = r;
		if (fabs(a[pivot][c]) < 1e-300)
			return false;
		for (int k = 0; k < PARAMS; k++) {
			double t = a[c][k];
			a[c][k] = a[pivot][k];
			a[pivot][k] = t;
		}
		double t = b[c];
		b[c] = b[pivot];
		b[pivot] = t;
		for (int r = c + 1; r < PARAMS; r++) {
			double f = a[r][c] / a[c][c];
			for (int k = c; k < PARAMS; k++)
				a[r][k] -= f * a[c][k];
			b[r] -= f * b[c];
		}
	}
	for (int c = PARAMS - 1; c >= 0; c--) {
		double s = b[c];
		for (int k = c + 1; k < PARAMS; k++)
			s -= a[c][k] * x[k];
		x[c] = s / a[c][c];
	}
	return true;
}

double sim_cost_fit(struct sim_cost_model *m, const struct sim_step_shape *shapes,
		    const double *seconds, uint32_t n, FILE *report)
{
	/* Relative least squares: each step weighs 1/t^2, so that short decode steps count
	 * as much as long prefills (the error that matters is relative). Features are
	 * scaled to comparable sizes first. */
	double scale[PARAMS] = {1, 0, 0, 0};
	for (uint32_t i = 0; i < n; i++) {
		double f[PARAMS];
		features(&shapes[i], f);
		for (int k = 1; k < PARAMS; k++)
			scale[k] = fmax(scale[k], f[k]);
	}
	double ata[PARAMS][PARAMS] = {{0}}, atb[PARAMS] = {0}, x[PARAMS];
	for (uint32_t i = 0; i < n; i++) {
		double f[PARAMS], w = 1.0 / (seconds[i] * seconds[i]);
		features(&shapes[i], f);
		for (int k = 0; k < PARAMS; k++)
			f[k] = scale[k] > 0 ? f[k] / scale[k] : 0;
		for (int r = 0; r < PARAMS; r++) {
			atb[r] += w * f[r] * seconds[i];
			for (int c = 0; c < PARAMS; c++)
				ata[r][c] += w * f[r] * f[c];
		}
	}
	/* A feature that never varies (every step one row, say) is left at zero. */
	for (int k = 1; k < PARAMS; k++)
		if (scale[k] == 0)
			ata[k][k] = 1.0;
	if (!solve(ata, atb, x))
		return -1.0;
	m->base_s = x[0];
	m->per_token_s = scale[1] > 0 ? x[1] / scale[1] : 0;
	m->per_row_s = scale[2] > 0 ? x[2] / scale[2] : 0;
	m->per_pair_s = scale[3] > 0 ? x[3] / scale[3] : 0;
	double worst = 0, sum = 0;
	if (report)
		fprintf(report, "%8s %6s %12s %12s %12s %8s\n", "tokens", "rows", "pairs",
			"measured ms", "model ms", "error");
	for (uint32_t i = 0; i < n; i++) {
		double model = sim_cost_seconds(m, &shapes[i]);
		double e = (model - seconds[i]) / seconds[i];
		worst = fmax(worst, fabs(e));
		sum += fabs(e);
		if (report)
			fprintf(report, "%8u %6u %12.0f %12.3f %12.3f %+7.1f%%\n", shapes[i].tokens,
				shapes[i].rows, shapes[i].pairs, seconds[i] * 1e3, model * 1e3,
				100 * e);
	}
	if (report)
		fprintf(report,
			"fit: %.4f ms + %.3f us/token + %.3f us/row + %.4f ns/pair; mean |error| "
			"%.1f%%, worst %.1f%%\n",
			m->base_s * 1e3, m->per_token_s * 1e6, m->per_row_s * 1e6,
			m->per_pair_s * 1e9, 100 * sum / n, 100 * worst);
	return worst;
}

int sim_cost_fit_step_log(struct sim_cost_model *m, const char *path, FILE *report, char *err,
			  size_t err_size)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		int rc = -errno;
		snprintf(err, err_size, "%s: %s", path, strerror(errno));
		return rc;
	}
	struct sim_step_shape *shapes = NULL;
	double *seconds = NULL;
	uint32_t n = 0, capacity = 0;
	char line[256];
	int number = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		number++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		unsigned rows, tokens;
		double pairs, t;
		int used = 0;
		if (sscanf(line, "%u %u %lf %lf %n", &rows, &tokens, &pairs, &t, &used) != 4 ||
		    line[used] || !rows || tokens < rows || !(pairs >= 0) || !(t > 0) ||
		    !isfinite(pairs) || !isfinite(t)) {
			snprintf(err, err_size,
				 "%s:%d: expected \"ROWS TOKENS PAIRS SECONDS\" (ringserved "
				 "--step-log)",
				 path, number);
			rc = -EINVAL;
			break;
		}
		if (n == capacity) {
			capacity = capacity ? 2 * capacity : 1024;
			void *a = realloc(shapes, capacity * sizeof(*shapes));
			if (a)
				shapes = a;
			void *b = a ? realloc(seconds, capacity * sizeof(*seconds)) : NULL;
			if (b)
				seconds = b;
			if (!a || !b) {
				rc = -ENOMEM;
				snprintf(err, err_size, "%s: out of memory", path);
				break;
			}
		}
		shapes[n] = (struct sim_step_shape){tokens, rows, pairs};
		seconds[n++] = t;
	}
	fclose(f);
	if (rc == 0 && n < 4 * 4) { /* a few steps per parameter at least */
		snprintf(err, err_size, "%s: %u steps; a fit needs at least 16", path, n);
		rc = -EINVAL;
	}
	if (rc == 0) {
		double worst = sim_cost_fit(m, shapes, seconds, n, NULL);
		if (worst < 0) {
			snprintf(err, err_size, "%s: the steps do not determine a fit", path);
			rc = -EDOM;
		} else {
			double sum = 0;
			for (uint32_t i = 0; i < n; i++)
				sum +=
				    fabs(sim_cost_seconds(m, &shapes[i]) - seconds[i]) / seconds[i];
			snprintf(m->source, sizeof(m->source), "%u served steps of %s", n, path);
			if (report)
				fprintf(
				    report,
				    "fit to %u steps of %s: %.4f ms + %.3f us/token + %.3f "
				    "us/row + %.4f ns/pair; mean |error| %.1f%%, worst %.1f%%\n",
				    n, path, m->base_s * 1e3, m->per_token_s * 1e6,
				    m->per_row_s * 1e6, m->per_pair_s * 1e9, 100 * sum / n,
				    100 * worst);
		}
	}
	free(shapes);
	free(seconds);
	return rc;
}

int sim_cost_load(struct sim_cost_model *m, const char *path, char *err, size_t err_size)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		int rc = -errno;
		snprintf(err, err_size, "%s: %s", path, strerror(errno));
		return rc;
	}
	memset(m, 0, sizeof(*m));
	char line[256];
	int number = 0, seen = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		number++;
		char key[32];
		double v;
		int used = 0;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%31s %n", key, &used) != 1) {
			rc = -EINVAL;
		} else if (strcmp(key, "source") == 0) {
			snprintf(m->source, sizeof(m->source), "%s", line + used);
			m->source[strcspn(m->source, "\n")] = 0;
		} else if (sscanf(line + used, "%lf", &v) != 1 || !isfinite(v)) {
			rc = -EINVAL;
		} else if (strcmp(key, "base_s") == 0) {
			m->base_s = v, seen |= 1;
		} else if (strcmp(key, "per_token_s") == 0) {
			m->per_token_s = v, seen |= 2;
		} else if (strcmp(key, "per_row_s") == 0) {
			m->per_row_s = v, seen |= 4;
		} else if (strcmp(key, "per_pair_s") == 0) {
			m->per_pair_s = v, seen |= 8;
		} else {
			rc = -EINVAL;
		}
		if (rc)
			snprintf(err, err_size,
				 "%s:%d: expected \"KEY VALUE\" (base_s, per_token_s, "
				 "per_row_s, per_pair_s, source)",
				 path, number);
	}
	fclose(f);
	if (rc == 0 && seen != 15) {
		snprintf(err, err_size,
			 "%s: base_s, per_token_s, per_row_s and per_pair_s are all "
			 "required",
			 path);
		rc = -EINVAL;
	}
	return rc;
}

int sim_cost_save(const struct sim_cost_model *m, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "# ringserve-sim step cost model: seconds = base + per_token x tokens + "
		   "per_row x rows + per_pair x attention pairs\n");
	fprintf(f, "source %s\nbase_s %.9g\nper_token_s %.9g\nper_row_s %.9g\nper_pair_s %.9g\n",
		m->source, m->base_s, m->per_token_s, m->per_row_s, m->per_pair_s);
	return fclose(f) == 0 ? 0 : -EIO;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* What a calibration times: a model shape and the step shapes a serving step mixes
 * (prefill chunks of one sequence; decode steps of batches at short and long contexts). */
struct calibration {
	const char *backend, *shape_name;
	struct rs_model_config cfg;
	enum rs_dtype dtype;
	uint32_t prefills[4], batches[6], contexts[2];
};

enum { CAL_MAX_ROWS = 128, CAL_REPS = 9 };

static const struct calibration calibrations[] = {
    /* stories15M's shape (ringserve-bench engine's CPU model). */
    {"cpu",
     "stories15M-shaped f32",
     RS_STORIES15M_CONFIG(256),
     RS_DTYPE_F32,
     {8, 32, 96, 192},
     {1, 2, 4, 8, 16, 32},
     {16, 200}},
    /* TinyLlama-1.1B's shape in f16 (ringserve-bench engine's GPU model). */
    {"cuda",
     "TinyLlama-1.1B-shaped f16",
     RS_TINYLLAMA_CONFIG(2048),
     RS_DTYPE_F16,
     {128, 512, 1024, 2048},
     {1, 4, 8, 16, 32, 128},
     {64, 1024}},
};

/* The `quantile` of `reps` runs of one step (0: the fastest, 0.5: the median): `rows`
 * sequences of n tokens from start. The fastest is the engine undisturbed (the machines
 * here are shared: other work only ever adds to a step's time); the median is the engine
 * as a server on the same machine at the same moment sees it. */
static double time_step(struct rs_engine *e, uint32_t rows, uint32_t start, uint32_t n,
			uint32_t *tables, uint32_t blocks_per_seq, uint32_t *tokens, int reps,
			double quantile)
{
	struct rs_seq_step steps[CAL_MAX_ROWS];
	uint32_t out[CAL_MAX_ROWS];
	double t[CAL_REPS];
	for (int r = 0; r < reps; r++) {
		for (uint32_t i = 0; i < rows; i++)
			steps[i] = (struct rs_seq_step){.tokens = tokens,
							.n_tokens = n,
							.start_pos = start,
							.block_table = tables + i * blocks_per_seq,
							.n_blocks = blocks_per_seq,
							.sample = 1,
							.out_token = &out[i]};
		double t0 = now_s();
		int rc = rs_engine_step(e, 0, steps, rows);
		if (rc == 0)
			rc = rs_engine_step_wait(e, 0);
		if (rc)
			return -1.0;
		t[r] = now_s() - t0;
	}
	qsort(t, reps, sizeof(double), compare_doubles);
	return t[(int)(quantile * (reps - 1) + 0.5)];
}

int sim_cost_calibrate(struct sim_cost_model *m, const char *backend, int threads, double quantile,
		       FILE *report)
{
	const struct calibration *cal = NULL;
	for (size_t i = 0; i < sizeof(calibrations) / sizeof(calibrations[0]); i++)
		if (strcmp(calibrations[i].backend, backend) == 0)
			cal = &calibrations[i];
	if (!cal)
		return -EINVAL;
	const struct rs_model_config *cfg = &cal->cfg;
	const uint32_t block_size = 16, blocks = cfg->max_seq_len / block_size;
	uint32_t rows = 0;
	for (int b = 0; b < 6; b++)
		rows = cal->batches[b] > rows ? cal->batches[b] : rows;
	struct rs_model *model = NULL;
	struct rs_engine *e = NULL;
	int rc = rs_model_random(cfg, cal->dtype, 15, true, &model);
	if (rc)
		return rc;
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = backend;
	opts.threads = threads;
	opts.kv_blocks = rows * blocks;
	char err[256];
	rc = rs_engine_create(model, &opts, &e, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ringserve-sim: calibration engine: %s\n", err);
		rs_model_free(model);
		return rc;
	}
	uint32_t *tables = malloc(sizeof(uint32_t) * rows * blocks);
	uint32_t *tokens = malloc(sizeof(uint32_t) * cfg->max_seq_len);
	if (!tables || !tokens)
		rc = -ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < rows * blocks; i++)
		tables[i] = (uint32_t)rs_kv_block_alloc(rs_engine_kv(e));
	for (uint32_t i = 0; rc == 0 && i < cfg->max_seq_len; i++)
		tokens[i] = (i * 7919u) % cfg->vocab_size;
	struct sim_step_shape shapes[16];
	double seconds[16];
	uint32_t n = 0;
	if (rc == 0) /* warm the pool, the caches and the GPU's clocks */
		time_step(e, 4, 0, 16, tables, blocks, tokens, 3, 0);
	for (uint32_t i = 0; i < 4 && rc == 0; i++, n++) {
		uint32_t p = cal->prefills[i];
		seconds[n] = time_step(e, 1, 0, p, tables, blocks, tokens, CAL_REPS, quantile);
		shapes[n] = (struct sim_step_shape){p, 1, p * (p + 1) / 2.0};
		rc = seconds[n] > 0 ? 0 : -EIO;
	}
	for (uint32_t b = 0; b < 6 && rc == 0; b++)
		for (uint32_t c = 0; c < 2 && rc == 0; c++, n++) {
			uint32_t batch = cal->batches[b], context = cal->contexts[c];
			seconds[n] = time_step(e, batch, context - 1, 1, tables, blocks, tokens,
					       CAL_REPS, quantile);
			shapes[n] = (struct sim_step_shape){batch, batch, (double)batch * context};
			rc = seconds[n] > 0 ? 0 : -EIO;
		}
	if (rc == 0) {
		snprintf(m->source, sizeof(m->source),
			 "%s engine, %s, %d threads, %s of %d runs "
			 "(ringserve-sim calibrate)",
			 backend, cal->shape_name, rs_engine_options(e)->threads,
			 quantile > 0 ? "median" : "fastest", CAL_REPS);
		if (sim_cost_fit(m, shapes, seconds, n, report) < 0)
			rc = -EDOM;
	}
	free(tables);
	free(tokens);
	rs_engine_destroy(e);
	rs_model_free(model);
	return rc;
}
