/* Multi-Bin Batching (Guldogan et al., 2024) on the scheduling core's lanes.
 *
 * Requests leave the admission policy in its order (fairness is the policy's) and are
 * staged, each in the bin of its predicted output length (length_predictor.h): bin i
 * holds lengths up to boundaries[i], the last bin the rest. A lane with nothing seated
 * takes a batch of up to B staged requests of one bin: a bin holding a full batch (the
 * one whose oldest request is oldest), else a bin whose oldest request has waited the
 * deadline. Requests of one batch then end at about the same time, so a static batch
 * (which runs until its last member ends, as the paper's servers do) wastes few seats.
 * In continuous mode a lane also refills freed seats from its bin at every step.
 *
 * When every lane is idle and no request waits for admission, the oldest bin runs at once,
 * full or not: idle hardware gains nothing from waiting (a burst's tail; a light load,
 * where batches are small anyway). So bins wait to fill only while the engine is busy.
 *
 * Staging is bounded: at most k x B requests staged at once, which guarantees a full bin
 * when the bound is reached (k bins of fewer than B hold fewer). Staged requests are
 * admitted (charged, their KV blocks promised), so the bound also bounds what they hold.
 *
 * Boundaries: fixed in the configuration, or the observed lengths' i/k quantiles
 * (equal-probability bins, the paper's Lemma 4.1), recomputed every 64 completions; before
 * the first completion, the same quantiles of the staged requests' predicted lengths (the
 * clients' hints), so that the first batches of a burst are binned too. Without hints to
 * start from they are also recomputed after each of the first 64 completions, and the
 * staged requests binned again; those staged with nothing to be predicted from (no hint,
 * nothing ended yet) are predicted when the first request ends.
 *
 * Workers (sched.h): each worker has its own bins, of the requests dispatched to it, and
 * its lanes take batches from those only (a batch runs in one worker's KV pool). A lane
 * stages for its worker: the dispatch policy places each admitted request (maybe on
 * another worker, staged there), or under d2lpm the lane's worker chooses it; the k x B
 * bound is per worker, and a worker may hold lanes x B seated and k x B staged
 * (sched->worker_seats, what dispatch offers). Boundaries and the predictor are shared:
 * the length distribution is the clients', not a worker's.
 *
 * Starvation: every staged request is in a bin, and bins give out requests oldest first.
 * Once a bin's oldest request has waited the deadline, every batch a free lane forms
 * takes a request older than it (choose_bin), and fewer than k x B are: so it is seated
 * within a deadline plus the batches of k x B requests (tests/sched_multibin checks
 * this bound). A continuous lane stops refilling while another bin has a request past
 * the deadline, so it empties and the same holds. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/length_predictor.h"
#include "daemon/sched/sched_internal.h"

enum { RECOMPUTE_EVERY = 64 };

struct multibin {
	struct rs_multibin_params params;
	uint32_t batch;
	uint64_t deadline_ns;
	bool fixed; /* boundaries from the configuration */
	uint32_t boundaries[RS_MULTIBIN_MAX_BINS - 1];
	struct rs_length_predictor *predictor;
	uint32_t *lane_bin;	 /* the bin each lane's seated batch came from */
	uint32_t *staged;	 /* per worker per bin: [worker * k + bin] */
	uint32_t *worker_staged; /* per worker, over its bins */
	bool *seen;		 /* per worker per bin: scratch for next_wakeup */
	uint64_t since_recompute;
	bool unpredicted_staged; /* a staged request had nothing to be predicted from */
	bool from_hints;	 /* the first boundaries came from hints (bootstrap) */
	struct rs_multibin_stats stats;
};

static struct multibin *state(const struct rs_sched *sched)
{
	return sched->planner_state;
}

static int multibin_create(struct rs_sched *sched)
{
	const struct rs_multibin_params *p = &sched->config.multibin;
	if (p->bins < 1 || p->bins > RS_MULTIBIN_MAX_BINS || p->batch > sched->config.max_batch)
		return -EINVAL;
	struct multibin *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	sched->planner_state = m;
	m->params = *p;
	m->batch = p->batch ? p->batch : sched->config.max_batch;
	m->deadline_ns = p->deadline_ns ? p->deadline_ns : 1000000000;
	for (uint32_t i = 0; i + 1 < p->bins; i++) {
		m->boundaries[i] = p->boundaries[i];
		m->fixed |= p->boundaries[i] != 0;
		if (i && p->boundaries[i] < p->boundaries[i - 1])
			return -EINVAL; /* destroy frees m */
	}
	m->lane_bin = calloc(sched->n_lanes, sizeof(*m->lane_bin));
	m->staged = calloc((size_t)sched->n_workers * p->bins, sizeof(*m->staged));
	m->worker_staged = calloc(sched->n_workers, sizeof(*m->worker_staged));
	m->seen = calloc((size_t)sched->n_workers * p->bins, sizeof(*m->seen));
	if (!m->lane_bin || !m->staged || !m->worker_staged || !m->seen)
		return -ENOMEM;
	sched->worker_seats = (sched->config.lanes + p->bins) * m->batch;
	return rs_length_predictor_create(sched->config.max_tenants, &m->predictor);
}

static void multibin_destroy(struct rs_sched *sched)
{
	struct multibin *m = state(sched);
	rs_length_predictor_destroy(m->predictor);
	free(m->lane_bin);
	free(m->staged);
	free(m->worker_staged);
	free(m->seen);
	free(m);
	sched->planner_state = NULL;
}

/* The staged count of the request's bin on its worker. */
static uint32_t *staged_in(const struct multibin *m, const struct rs_request *r)
{
	return &m->staged[(size_t)r->worker * m->params.bins + r->bin];
}

static uint32_t bin_of(const struct multibin *m, uint32_t length)
{
	uint32_t b = 0;
	while (b + 1 < m->params.bins && length > m->boundaries[b])
		b++;
	return b;
}

static void recompute_boundaries(struct multibin *m)
{
	for (uint32_t i = 0; i + 1 < m->params.bins; i++)
		m->boundaries[i] =
		    rs_length_quantile(m->predictor, (double)(i + 1) / m->params.bins);
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Every staged request into the bin of its predicted length again (the boundaries
 * moved), predicted first where it had nothing to be predicted from when it was staged
 * (no hint and no request ended yet). Its age in its bin is its admission's: the
 * oldest-first rule, and so the deadline bound, hold across the move. */
static void rebin_staged(struct rs_sched *sched, struct multibin *m)
{
	memset(m->staged, 0, (size_t)sched->n_workers * m->params.bins * sizeof(*m->staged));
	m->unpredicted_staged = false;
	for (struct rs_request *r = sched->staged_head; r; r = r->queue_next) {
		if (!r->predicted_output)
			r->predicted_output = rs_length_predict(m->predictor, r);
		m->unpredicted_staged |= !r->predicted_output;
		r->bin = bin_of(m, r->predicted_output);
		(*staged_in(m, r))++;
	}
}

/* Before any request has ended, boundaries come from the staged requests' predicted
 * lengths (their hints), equal-probability as the observed ones will be: the first
 * batches of a burst are binned too. The staged requests are binned again. */
static void bootstrap_boundaries(struct rs_sched *sched, struct multibin *m)
{
	uint32_t lengths[RS_MULTIBIN_MAX_BINS * 256], n = 0;
	for (const struct rs_request *r = sched->staged_head; r && n < sizeof(lengths) / 4;
	     r = r->queue_next)
		if (r->predicted_output)
			lengths[n++] = r->predicted_output;
	if (!n)
		return;
	m->from_hints = true;
	qsort(lengths, n, sizeof(uint32_t), compare_u32);
	for (uint32_t i = 0; i + 1 < m->params.bins; i++) {
		uint32_t rank =
		    (uint32_t)(((uint64_t)(i + 1) * n + m->params.bins - 1) / m->params.bins);
		m->boundaries[i] = lengths[rank - 1];
	}
	rebin_staged(sched, m);
}

/* Stage admitted requests for the lane's worker, each in its bin on the worker it was
 * dispatched to, until that worker has k x B (or nothing more is admitted). */
static void stage(struct rs_sched *sched, struct multibin *m, const struct rs_sched_lane *lane)
{
	struct rs_request *request;
	uint32_t staged = 0;
	while (m->worker_staged[lane->worker->index] < m->params.bins * m->batch &&
	       (request = rs_sched_admit_staged_for(sched, lane))) {
		request->predicted_output = rs_length_predict(m->predictor, request);
		m->unpredicted_staged |= !request->predicted_output;
		request->bin = bin_of(m, request->predicted_output);
		(*staged_in(m, request))++;
		m->worker_staged[request->worker]++;
		staged++;
	}
	if (staged && !m->fixed && !rs_length_observations(m->predictor))
		bootstrap_boundaries(sched, m);
}

/* The bin a free lane takes a batch from: of the bins that hold a full batch or whose
 * oldest request has waited the deadline, the one whose oldest request is oldest;
 * UINT32_MAX when none is. (A full bin never overtakes an older due one: each batch
 * then takes a request older than the due bin's oldest, so it runs within the batches
 * of the at most k x B - 1 requests staged before it.) */
static uint32_t choose_bin(const struct rs_sched *sched, const struct multibin *m,
			   const struct rs_sched_lane *lane)
{
	uint32_t worker = lane->worker->index;
	uint64_t now = sched->hooks.now_ns(sched->hooks.ctx);
	bool seen[RS_MULTIBIN_MAX_BINS] = {false};
	const struct rs_request *oldest = NULL;
	/* The staged list is in admission order: a bin's first entry is its oldest. */
	for (const struct rs_request *r = sched->staged_head; r; r = r->queue_next) {
		if (r->worker != worker || seen[r->bin])
			continue;
		seen[r->bin] = true;
		oldest = oldest ? oldest : r;
		if (*staged_in(m, r) >= m->batch || r->admitted_ns + m->deadline_ns <= now)
			return r->bin;
	}
	/* The worker's lanes all idle and nobody else waiting: holding a bin back would leave
	 * them idle for a batch that may never fill (a burst's tail, a light load). */
	if (!oldest || rs_admission_waiting(sched->admission))
		return UINT32_MAX;
	uint32_t first = worker * sched->config.lanes;
	for (uint32_t l = first; l < first + sched->config.lanes; l++)
		if (sched->lanes[l].n_running - sched->lanes[l].n_holes ||
		    sched->lanes[l].in_flight)
			return UINT32_MAX;
	return oldest->bin;
}

/* Whether another bin of the lane's worker than b has a request that waited the
 * deadline: then a continuous lane of bin b stops refilling, so that it empties and takes
 * that bin's batch. */
static bool other_bin_due(const struct rs_sched *sched, const struct multibin *m,
			  const struct rs_sched_lane *lane, uint32_t b)
{
	uint64_t now = sched->hooks.now_ns(sched->hooks.ctx);
	for (const struct rs_request *r = sched->staged_head; r; r = r->queue_next)
		if (r->admitted_ns + m->deadline_ns > now)
			return false; /* the rest are younger */
		else if (r->worker == lane->worker->index && r->bin != b)
			return true;
	return false;
}

/* Seat up to `seats` staged requests of bin b of the lane's worker in the lane, oldest
 * first. */
static void seat_from_bin(struct rs_sched *sched, struct multibin *m, struct rs_sched_lane *lane,
			  uint32_t b, uint32_t seats)
{
	struct rs_request *r = sched->staged_head;
	while (r && seats) {
		struct rs_request *next = r->queue_next;
		if (r->bin == b && r->worker == lane->worker->index) {
			(*staged_in(m, r))--;
			m->worker_staged[r->worker]--;
			rs_sched_seat(sched, lane, r);
			seats--;
		}
		r = next;
	}
}

static void plan_multibin(struct rs_sched *sched, struct rs_sched_lane *lane)
{
	struct multibin *m = state(sched);
	uint32_t seated = lane->n_running - lane->n_holes;
	if (seated == 0 || m->params.continuous)
		stage(sched, m, lane);
	if (seated == 0) {
		uint32_t b = choose_bin(sched, m, lane);
		if (b == UINT32_MAX)
			return; /* no bin is ready: its deadline wakes the core */
		m->lane_bin[lane->index] = b;
		uint32_t in_bin = m->staged[(size_t)lane->worker->index * m->params.bins + b];
		uint32_t n = in_bin < m->batch ? in_bin : m->batch;
		m->stats.batches++;
		m->stats.batch_requests += n;
		seat_from_bin(sched, m, lane, b, n);
	} else if (m->params.continuous &&
		   !other_bin_due(sched, m, lane, m->lane_bin[lane->index])) {
		uint32_t b = m->lane_bin[lane->index], seats = rs_sched_free_seats(sched, lane);
		uint32_t room = m->batch > seated ? m->batch - seated : 0;
		seat_from_bin(sched, m, lane, b, seats < room ? seats : room);
	}
	uint32_t budget = sched->config.max_batch_tokens;
	rs_planner_plan_seated(sched, lane, &budget);
}

/* The earliest deadline of a bin's first staged request (what choose_bin looks at), over
 * every worker's bins. */
static uint64_t multibin_next_wakeup(const struct rs_sched *sched)
{
	const struct multibin *m = state(sched);
	memset(m->seen, 0, (size_t)sched->n_workers * m->params.bins * sizeof(*m->seen));
	uint64_t earliest = 0;
	for (const struct rs_request *r = sched->staged_head; r; r = r->queue_next) {
		bool *seen = &m->seen[(size_t)r->worker * m->params.bins + r->bin];
		if (*seen)
			continue;
		*seen = true;
		uint64_t due = r->admitted_ns + m->deadline_ns;
		if (!earliest || due < earliest)
			earliest = due;
	}
	return earliest;
}

static void multibin_finished(struct rs_sched *sched, const struct rs_request *request)
{
	struct multibin *m = state(sched);
	uint32_t length = request->generated;
	if (request->predicted_output) {
		uint32_t p = request->predicted_output;
		m->stats.predictions++;
		m->stats.abs_error_sum += p > length ? p - length : length - p;
		m->stats.right_bin += bin_of(m, p) == bin_of(m, length);
	}
	rs_length_observe(m->predictor, request, length);
	/* Learned boundaries, every RECOMPUTE_EVERY ends; without hints to start from, also
	 * after each of the first RECOMPUTE_EVERY (until then they were all 0: one bin). */
	bool early =
	    !m->fixed && !m->from_hints && rs_length_observations(m->predictor) <= RECOMPUTE_EVERY;
	if (!m->fixed && (++m->since_recompute >= RECOMPUTE_EVERY || early)) {
		m->since_recompute = 0;
		recompute_boundaries(m);
	}
	if (early || m->unpredicted_staged)
		rebin_staged(sched, m);
}

static void multibin_unstaged(struct rs_sched *sched, const struct rs_request *request)
{
	struct multibin *m = state(sched);
	(*staged_in(m, request))--;
	m->worker_staged[request->worker]--;
}

const struct rs_planner_ops rs_planner_multibin = {
    .name = "multibin",
    .create = multibin_create,
    .destroy = multibin_destroy,
    .plan = plan_multibin,
    .next_wakeup_ns = multibin_next_wakeup,
    .finished = multibin_finished,
    .unstaged = multibin_unstaged,
};

const struct rs_multibin_stats *rs_multibin_stats(const struct rs_sched *sched)
{
	return sched->planner == &rs_planner_multibin ? &state(sched)->stats : NULL;
}

uint32_t rs_multibin_boundaries(const struct rs_sched *sched, uint32_t *out)
{
	if (sched->planner != &rs_planner_multibin)
		return 0;
	const struct multibin *m = state(sched);
	memcpy(out, m->boundaries, (m->params.bins - 1) * sizeof(uint32_t));
	return m->params.bins - 1;
}
