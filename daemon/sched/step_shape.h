/* What a step costs depends on: the shape of a planned step, shared by the simulator's
 * cost model (tools/ringserve-sim/cost_model.c) and the daemon's step log (ringserved
 * --step-log), so that a cost model fitted to one is read the same way by the other. */
#ifndef RINGSERVE_SCHED_STEP_SHAPE_H
#define RINGSERVE_SCHED_STEP_SHAPE_H

#include <stdint.h>

#include "kernels/engine/engine.h"

struct rs_step_shape {
	uint32_t tokens; /* tokens the step computes (prefill chunks and decodes) */
	uint32_t rows;	 /* sequences in the step */
	double pairs;	 /* attention (query, key) pairs: position s + i attends to s + i + 1 */
};

void rs_step_shape_of(const struct rs_seq_step *steps, uint32_t n, struct rs_step_shape *out);

#endif
