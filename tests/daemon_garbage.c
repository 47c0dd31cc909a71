/* Hostile clients: random bytes in the rings and slots, out-of-range indices, lengths
 * over the limits, a tail running ahead of what was written, a corrupted completion head.
 * The daemon answers with error completions or disconnects the offender, and a
 * well-behaved client beside them keeps getting the right tokens throughout. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/segment.h"
#include "tests/harness/harness.h"

#define VOCAB 300

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t next_random(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(void *p, size_t n)
{
	unsigned char *bytes = p;
	for (size_t i = 0; i < n; i++)
		bytes[i] = (unsigned char)next_random();
}

/* One request on the good connection, checked token by token. */
static void good_request(struct rs_connection *good, unsigned seed)
{
	unsigned prompt[8];
	for (int i = 0; i < 8; i++)
		prompt[i] = (seed * 31 + (unsigned)i) % VOCAB;
	test_null_request(good, prompt, 8, 5, VOCAB);
}

/* True once the daemon has dropped this connection: its socket reads EOF. Not through
 * rs_wait, which would consume completions and so rewrite the corrupted indices. */
static int wait_disconnected(struct rs_connection *conn)
{
	struct pollfd pfd = {.fd = rs_fd(conn), .events = POLLIN | POLLRDHUP};
	if (poll(&pfd, 1, 10000) != 1)
		return 0;
	char byte;
	return recv(pfd.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "300", "--ring-entries", "16", "--slots", "16",
			      "--max-inflight", "16", "--max-prompt", "128", "--max-output", "64", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *good;
	CHECK(rs_connect(daemon.socket_path, NULL, &good) == 0, "good connect");
	good_request(good, 0);

	/* 1. Random SQEs and random slot contents, published honestly: each gets an error
	 *    completion or is served (a random SQE can be valid); the connection survives
	 *    as long as the client keeps consuming completions. */
	struct rs_connection *bad;
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect");
	for (int round = 0; round < 200; round++) {
		for (uint32_t s = 0; s < bad->hdr.slot_count; s++)
			fill_random(rs_segment_slot_prompt(bad->segment, &bad->hdr, s), 128 * 4);
		int64_t space = rs_ring_producer_space(&bad->sq);
		CHECK(space >= 0, "bad space");
		uint32_t n = (uint32_t)(space < 8 ? space : 8);
		for (uint32_t i = 0; i < n; i++) {
			struct rs_sqe *sqe = rs_ring_producer_slot(&bad->sq, i);
			fill_random(sqe, sizeof(*sqe));
			if (i % 2) { /* half of them near-valid, to reach deeper checks */
				sqe->opcode = RS_OP_GENERATE;
				sqe->slot %= 20;
				sqe->prompt_len %= 200;
				sqe->max_new_tokens %= 100;
				sqe->temperature = 0.5f;
				sqe->top_p = 1.0f;
				sqe->flags = 0;
			}
		}
		rs_ring_producer_publish(&bad->sq, n);
		rs_conn_ring_doorbell(bad);
		/* Consume whatever came back, raw (the library's slot bookkeeping does not
		 * know these requests), so the daemon keeps accepting. */
		int64_t ready = rs_ring_consumer_refresh(&bad->cq);
		CHECK(ready >= 0, "bad cq");
		if (ready > 0)
			rs_ring_consumer_release(&bad->cq, (uint32_t)ready);
		if (round % 20 == 0)
			good_request(good, (unsigned)round);
	}
	good_request(good, 1);
	rs_close(bad);

	/* 2. A tail that runs ahead of what was written: a full ring and one more. */
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect 2");
	atomic_store(&bad->sq.indices->tail, bad->hdr.sq_entries + 5);
	rs_conn_ring_doorbell(bad);
	CHECK(wait_disconnected(bad), "tail ahead: not disconnected");
	rs_close(bad);
	good_request(good, 2);

	/* 3. A tail behind the head (runs backwards). */
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect 3");
	atomic_store(&bad->sq.indices->tail, 0xfffffff0u);
	rs_conn_ring_doorbell(bad);
	CHECK(wait_disconnected(bad), "tail backwards: not disconnected");
	rs_close(bad);
	good_request(good, 3);

	/* 4. A completion head moved past the tail, then a submission that needs a CQE. */
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect 4");
	atomic_store(&bad->cq.indices->head, 1000);
	/* The daemon re-reads the head when its cached view shows the CQ full: after 16
	 * completions, which the client never takes. */
	for (int i = 0; i < 17;) {
		int ret = rs_submit_nop(bad, (uint64_t)i);
		if (ret == 0)
			i++;
		else if (ret == -EAGAIN)
			rs_cpu_relax();
		else
			break; /* already disconnected */
	}
	CHECK(wait_disconnected(bad), "corrupt cq head: not disconnected");
	rs_close(bad);
	good_request(good, 4);

	/* 5. Garbage over the whole segment header and rings (the daemon never reads its
	 *    layout back; only the indices matter), then a stream of submissions. */
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect 5");
	fill_random(bad->segment, bad->hdr.slots_offset);
	rs_conn_ring_doorbell(bad);
	rs_close(bad);
	good_request(good, 5);

	/* 6. A client that never consumes completions cannot make the daemon overflow its
	 *    CQ or lose work: it stops taking submissions until room appears. */
	CHECK(rs_connect(daemon.socket_path, NULL, &bad) == 0, "bad connect 6");
	for (int i = 0; i < 16; i++)
		CHECK(rs_submit_nop(bad, (uint64_t)i) == 0, "nop %d", i);
	good_request(good, 6); /* the daemon has surely looked at bad's ring by now */
	for (int i = 16; i < 32; i++)
		CHECK(rs_submit_nop(bad, (uint64_t)i) == 0, "nop %d", i);
	good_request(good, 7);
	/* The CQ holds 16; the other 16 wait in the SQ. Take them all, in order. */
	struct rs_completion done[32];
	int got = 0;
	while (got < 32) {
		int n = rs_wait(bad, done + got, 32 - (unsigned)got, 5000);
		CHECK(n > 0, "completions of the stalled client: %d", n);
		got += n;
	}
	for (int i = 0; i < 32; i++)
		CHECK(done[i].user_data == (uint64_t)i && done[i].status == 0, "nop %d in order", i);
	rs_close(bad);

	good_request(good, 8);
	rs_close(good);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
