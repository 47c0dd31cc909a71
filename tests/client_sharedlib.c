/* libringserve.so exports exactly the public API of ringserve.h, through its soname,
 * and works on its own: a connection made through it to a running daemon serves. */
#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

static const char *const public_api[] = {
	"rs_connect", "rs_close", "rs_model_info", "rs_submit", "rs_submit_nop", "rs_poll",
	"rs_wait", "rs_output", "rs_wait_output", "rs_cancel", "rs_release", "rs_fd",
	"rs_event_fd", "rs_event_arm",
};
static const char *const internal[] = {
	"rs_segment_create", "rs_segment_check", "rs_futex_wait", "rs_conn_ring_doorbell",
	"rs_conn_check_daemon",
};

int main(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/libringserve.so.0", test_build_dir());
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CHECK(lib, "dlopen %s: %s", path, dlerror());
	for (size_t i = 0; i < sizeof(public_api) / sizeof(public_api[0]); i++)
		CHECK(dlsym(lib, public_api[i]), "%s is not exported", public_api[i]);
	for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++)
		CHECK(!dlsym(lib, internal[i]), "%s must not be exported", internal[i]);

	int (*connect_fn)(const char *, const struct rs_connect_options *, struct rs_connection **) =
		(int (*)(const char *, const struct rs_connect_options *, struct rs_connection **))dlsym(lib, "rs_connect");
	int (*submit_fn)(struct rs_connection *, const struct rs_generate_params *) =
		(int (*)(struct rs_connection *, const struct rs_generate_params *))dlsym(lib, "rs_submit");
	int (*wait_fn)(struct rs_connection *, struct rs_completion *, unsigned, int) =
		(int (*)(struct rs_connection *, struct rs_completion *, unsigned, int))dlsym(lib, "rs_wait");
	void (*close_fn)(struct rs_connection *) = (void (*)(struct rs_connection *))dlsym(lib, "rs_close");

	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "100", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(connect_fn(daemon.socket_path, NULL, &conn) == 0, "connect through the .so");
	unsigned prompt[2] = {3, 4};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2, .max_new_tokens = 3};
	CHECK(submit_fn(conn, &params) >= 0, "submit through the .so");
	struct rs_completion done;
	CHECK(wait_fn(conn, &done, 1, 5000) == 1 && done.status == 0 && done.output_len == 3,
	      "completion through the .so");
	close_fn(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	dlclose(lib);
	return T_EXIT_PASS;
}
