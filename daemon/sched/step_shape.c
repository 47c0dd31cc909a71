/* The shape of a planned step (step_shape.h). */
#include "daemon/sched/step_shape.h"

void rs_step_shape_of(const struct rs_seq_step *steps, uint32_t n, struct rs_step_shape *out)
{
	out->tokens = 0;
	out->rows = n;
	out->pairs = 0;
	for (uint32_t i = 0; i < n; i++) {
		double s = steps[i].start_pos, t = steps[i].n_tokens;
		out->tokens += steps[i].n_tokens;
		out->pairs += t * s + t * (t + 1) / 2;
	}
}
