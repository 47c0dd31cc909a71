/* Admission: the public calls, dispatched to the policy chosen at creation (one file per
 * policy behind struct rs_admission_ops), and what every policy shares: the waiting
 * counts, the charges and the weighted service account. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/admission.h"
#include "daemon/sched/admission_ops.h"

/* Defaults for parameters given as 0. w_q = 2 w_p as in VTC's artifact (an output token
 * costs about twice an input token); Q = 2048 weighted tokens, a first guess to be tuned:
 * a few typical prompts per round, between VTC-like interleaving and LPM-like runs. */
#define RS_ADMISSION_DEFAULT_W_PROMPT 1.0
#define RS_ADMISSION_DEFAULT_W_OUTPUT 2.0
#define RS_ADMISSION_DEFAULT_QUANTUM  2048.0

static const struct rs_admission_ops *const policy_ops[] = {
    [RS_ADMISSION_FCFS] = &rs_admission_fcfs_ops,
    [RS_ADMISSION_LPM] = &rs_admission_lpm_ops,
    [RS_ADMISSION_VTC] = &rs_admission_vtc_ops,
    [RS_ADMISSION_DLPM] = &rs_admission_dlpm_ops,
};

#define POLICY_COUNT (sizeof(policy_ops) / sizeof(policy_ops[0]))

/* Parse "fcfs", "lpm", "vtc" or "dlpm". Returns 0 or -EINVAL. */
int rs_admission_policy_parse(const char *name, enum rs_admission_policy *policy)
{
	for (size_t i = 0; i < POLICY_COUNT; i++) {
		if (strcmp(name, policy_ops[i]->name) == 0) {
			*policy = (enum rs_admission_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* The policy's name, or "?" for a value out of range. */
const char *rs_admission_policy_name(enum rs_admission_policy policy)
{
	if ((size_t)policy >= POLICY_COUNT)
		return "?";
	return policy_ops[policy]->name;
}

/* A weight parameter: 0 takes the default; negative, NaN or infinite is refused. */
static int param_or_default(double value, double fallback, double *out)
{
	if (!isfinite(value) || value < 0)
		return -EINVAL;
	*out = value == 0 ? fallback : value;
	return 0;
}

/* Returns 0, -EINVAL (unknown policy, no tenants, a bad weight) or -ENOMEM. */
int rs_admission_create(const struct rs_admission_params *params, struct rs_admission **out)
{
	if ((size_t)params->policy >= POLICY_COUNT || params->max_tenants == 0)
		return -EINVAL;
	struct rs_admission_params p = *params;
	if (param_or_default(params->w_prompt, RS_ADMISSION_DEFAULT_W_PROMPT, &p.w_prompt) ||
	    param_or_default(params->w_output, RS_ADMISSION_DEFAULT_W_OUTPUT, &p.w_output) ||
	    param_or_default(params->quantum, RS_ADMISSION_DEFAULT_QUANTUM, &p.quantum))
		return -EINVAL;

	struct rs_admission *admission = calloc(1, sizeof(*admission));
	if (!admission)
		return -ENOMEM;
	admission->ops = policy_ops[p.policy];
	admission->params = p;
	int ret = admission->ops->init(admission);
	if (ret < 0) {
		free(admission);
		return ret;
	}
	*out = admission;
	return 0;
}

/* Free the policy's state; requests still queued are simply forgotten. NULL is a no-op. */
void rs_admission_destroy(struct rs_admission *admission)
{
	if (!admission)
		return;
	admission->ops->fini(admission);
	free(admission);
}

void rs_admission_enqueue(struct rs_admission *admission, struct rs_request *request, bool front)
{
	rs_admission_enqueue_inline(admission, request, front);
}

/* Uncount it, then unlink it: the policy sees tenant->waiting == 0 for a tenant that
 * stops being backlogged. */
void rs_admission_remove(struct rs_admission *admission, struct rs_request *request)
{
	request->tenant->waiting--;
	admission->waiting--;
	admission->ops->remove(admission, request);
}

struct rs_request *rs_admission_peek(struct rs_admission *admission)
{
	return rs_admission_peek_inline(admission);
}

void rs_admission_take(struct rs_admission *admission, struct rs_request *request,
		       uint32_t uncached_tokens)
{
	rs_admission_take_inline(admission, request, uncached_tokens);
}

/* Only the policies that order by match_blocks care; an unchanged value is no change. */
void rs_admission_match_changed(struct rs_admission *admission, struct rs_request *request,
				uint32_t old_blocks)
{
	if (old_blocks == request->waiter.match_blocks || !admission->ops->match_changed)
		return;
	admission->ops->match_changed(admission, request);
}

/* Charged to the service account under every policy, whether the tenant waits or not. */
void rs_admission_charge_output(struct rs_admission *admission, struct rs_tenant *tenant,
				uint32_t n_tokens)
{
	double charge = admission->params.w_output * n_tokens;
	tenant->service += charge / tenant->weight;
	if (admission->ops->charge_output)
		admission->ops->charge_output(admission, tenant, charge);
}

bool rs_admission_orders_by_prefix(const struct rs_admission *admission)
{
	return admission->ops->match_changed != NULL;
}

/* Requests queued, all tenants together. */
uint32_t rs_admission_waiting(const struct rs_admission *admission)
{
	return admission->waiting;
}

double rs_admission_w_prompt(const struct rs_admission *admission)
{
	return admission->params.w_prompt;
}

double rs_admission_w_output(const struct rs_admission *admission)
{
	return admission->params.w_output;
}
