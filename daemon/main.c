/* ringserved: the ringserve daemon. Options: docs/running.md, or --help. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/sched/options.h"
#include "daemon/systemd.h"

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: ringserved [options]\n"
	    "  --socket PATH         control socket (default $XDG_RUNTIME_DIR/ringserve.sock,\n"
	    "                        else /run/ringserve/ringserve.sock)\n"
	    "  --socket-mode OCTAL   permissions of the socket file (default 0660)\n"
	    "  --allow-uid UID[,UID] peers allowed by user id or name (default: our uid and root)\n"
	    "  --allow-gid GID[,GID] peers allowed by group id or name\n"
	    "  --cpu N               pin the scheduler core to CPU N, memory on its NUMA node\n"
	    "  --max-clients N       (64)\n"
	    "  --ring-entries N      submission/completion ring entries per client, power of 2 "
	    "(256)\n"
	    "  --slots N             request slots per client (256)\n"
	    "  --max-inflight N      requests in flight per client (256)\n"
	    "  --max-prompt N        prompt tokens per request (4096)\n"
	    "  --max-output N        output tokens per request (4096)\n"
	    "  --spin-us N           busy-poll this long without work before sleeping (200)\n"
	    "  --grace-ms N          on SIGTERM, let in-flight work finish this long (10000)\n"
	    "  --eventfd             wake the daemon through an eventfd, not IORING_OP_FUTEX_WAIT\n"
	    "  --model PATH          serve this model (GGUF, or a llama2.c checkpoint)\n"
	    "  --tokenizer PATH      llama2.c tokenizer.bin (default: next to the checkpoint)\n"
	    "  --backend NAME        auto, cpu or cuda (auto)\n"
	    "  --threads N           CPU backend worker threads (one per CPU)\n"
	    "  --kv-blocks N         KV cache blocks of 16 positions (model: 8 full contexts;\n"
	    "                        null engine: 8192, which it only accounts for)\n"
	    "  --kv-dtype TYPE       auto, f32 or f16: the CPU backend's KV cache (auto: f16 for\n"
	    "                        f16/bf16 models, f32 for f32 models)\n"
	    "  --step-log FILE       write each engine step's shape and seconds to FILE (for\n"
	    "                        ringserve-sim calibrate --step-log)\n"
	    "  --max-batch-tokens N  tokens per step, prefill chunks included (512)\n"
	    "  --engine null         no model: deterministic tokens (the default without --model)\n"
	    "  --null-vocab N        null engine vocabulary size (32000)\n"
	    "  --null-delay-us N     null engine: each step takes N us (0)\n"
	    "  --null-fail-worker N  null engine: worker N's steps fail with -EIO (a test's\n"
	    "                        fault), after its first --null-fail-after N steps (0)\n"
	    "  --null-admission-log FILE null engine: write each request's arrival and\n"
	    "                        admission to FILE, in admission order (tests)\n"
	    "  --lanes N             engine lanes (1)\n"
	    "  --max-batch N         requests per step (256)\n");
	rs_sched_options_usage(out, RS_SCHED_USAGE_BATCHING);
	fputs("  --workers N           engine instances, each its own KV pool, prefix cache and\n"
	      "                        --lanes lanes; CPU workers split --threads (1)\n",
	      out);
	rs_sched_options_usage(out, RS_SCHED_USAGE_DISPATCH);
	fprintf(
	    out,
	    "  --worker-max-failures N a worker whose steps fail N times in a row is taken out\n"
	    "                        of service, its requests go to the others (0: never)\n"
	    "  --max-tenants N       tenants known at once (1024)\n"
	    "  --config FILE         tenants: weights, limits, allowed uids (SIGHUP reloads it)\n"
	    "  --ready-fd N          write one byte to descriptor N once listening, then close it\n"
	    "  --verbose\n");
}

/* "ID[,ID...]": numbers, or user (group when groups) names. */
static int parse_id_list(const char *text, bool groups, unsigned int *ids, uint32_t *count)
{
	char *copy = strdup(text), *save = NULL;
	if (!copy)
		return -ENOMEM;
	int ret = 0;
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		unsigned long id;
		const struct passwd *user;
		const struct group *group;
		if (*count >= RS_MAX_ALLOW) {
			ret = -EINVAL;
			break;
		}
		if (rs_parse_unsigned(item, 10, 0, UINT_MAX - 1, &id) == 0)
			ids[(*count)++] = (unsigned int)id;
		else if (!groups && (user = getpwnam(item)))
			ids[(*count)++] = user->pw_uid;
		else if (groups && (group = getgrnam(item)))
			ids[(*count)++] = group->gr_gid;
		else {
			fprintf(stderr, "ringserved: no such %s: %s\n", groups ? "group" : "user",
				item);
			ret = -EINVAL;
			break;
		}
	}
	free(copy);
	return ret;
}

static char *default_socket_path(void)
{
	static char path[108];
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	if (runtime && *runtime) {
		snprintf(path, sizeof(path), "%s/ringserve.sock", runtime);
	} else {
		mkdir("/run/ringserve", 0755);
		snprintf(path, sizeof(path), "/run/ringserve/ringserve.sock");
	}
	return path;
}

int main(int argc, char **argv)
{
	struct rs_daemon_config config;
	rs_daemon_config_defaults(&config);
	struct rs_null_engine_options null_options = {
	    .vocab_size = 32000, .lanes = 1, .max_batch = 256, .token_delay_ns = 0};
	const char *engine_name = NULL;
	struct rs_model_engine_options model_options = {.backend = "auto"};
	int ready_fd = -1;
	uint32_t workers = 1;
	int fail_worker = -1; /* --null-fail-worker */
	const char *step_log_path = NULL;
	const char *admission_log_path = NULL; /* --null-admission-log */

	enum {
		OPT_SOCKET = 256,
		OPT_SOCKET_MODE,
		OPT_ALLOW_UID,
		OPT_ALLOW_GID,
		OPT_CPU,
		OPT_MAX_CLIENTS,
		OPT_RING_ENTRIES,
		OPT_SLOTS,
		OPT_MAX_INFLIGHT,
		OPT_MAX_PROMPT,
		OPT_MAX_OUTPUT,
		OPT_SPIN_US,
		OPT_GRACE_MS,
		OPT_EVENTFD,
		OPT_ENGINE,
		OPT_NULL_VOCAB,
		OPT_NULL_DELAY_US,
		OPT_LANES,
		OPT_MAX_BATCH,
		OPT_VERBOSE,
		OPT_HELP,
		OPT_READY_FD,
		OPT_MODEL,
		OPT_TOKENIZER,
		OPT_BACKEND,
		OPT_THREADS,
		OPT_KV_BLOCKS,
		OPT_MAX_BATCH_TOKENS,
		OPT_KV_DTYPE,
		OPT_MAX_TENANTS,
		OPT_CONFIG,
		OPT_WORKERS,
		OPT_STEP_LOG,
		OPT_WORKER_MAX_FAILURES,
		OPT_NULL_FAIL_WORKER,
		OPT_NULL_FAIL_AFTER,
		OPT_NULL_ADMISSION_LOG,
	};
	static const struct option own_options[] = {
	    {"socket", required_argument, 0, OPT_SOCKET},
	    {"socket-mode", required_argument, 0, OPT_SOCKET_MODE},
	    {"allow-uid", required_argument, 0, OPT_ALLOW_UID},
	    {"allow-gid", required_argument, 0, OPT_ALLOW_GID},
	    {"cpu", required_argument, 0, OPT_CPU},
	    {"max-clients", required_argument, 0, OPT_MAX_CLIENTS},
	    {"ring-entries", required_argument, 0, OPT_RING_ENTRIES},
	    {"slots", required_argument, 0, OPT_SLOTS},
	    {"max-inflight", required_argument, 0, OPT_MAX_INFLIGHT},
	    {"max-prompt", required_argument, 0, OPT_MAX_PROMPT},
	    {"max-output", required_argument, 0, OPT_MAX_OUTPUT},
	    {"spin-us", required_argument, 0, OPT_SPIN_US},
	    {"grace-ms", required_argument, 0, OPT_GRACE_MS},
	    {"eventfd", no_argument, 0, OPT_EVENTFD},
	    {"engine", required_argument, 0, OPT_ENGINE},
	    {"null-vocab", required_argument, 0, OPT_NULL_VOCAB},
	    {"null-delay-us", required_argument, 0, OPT_NULL_DELAY_US},
	    {"lanes", required_argument, 0, OPT_LANES},
	    {"max-batch", required_argument, 0, OPT_MAX_BATCH},
	    {"verbose", no_argument, 0, OPT_VERBOSE},
	    {"help", no_argument, 0, OPT_HELP},
	    {"ready-fd", required_argument, 0, OPT_READY_FD},
	    {"model", required_argument, 0, OPT_MODEL},
	    {"tokenizer", required_argument, 0, OPT_TOKENIZER},
	    {"backend", required_argument, 0, OPT_BACKEND},
	    {"threads", required_argument, 0, OPT_THREADS},
	    {"kv-blocks", required_argument, 0, OPT_KV_BLOCKS},
	    {"max-batch-tokens", required_argument, 0, OPT_MAX_BATCH_TOKENS},
	    {"kv-dtype", required_argument, 0, OPT_KV_DTYPE},
	    {"max-tenants", required_argument, 0, OPT_MAX_TENANTS},
	    {"config", required_argument, 0, OPT_CONFIG},
	    {"workers", required_argument, 0, OPT_WORKERS},
	    {"step-log", required_argument, 0, OPT_STEP_LOG},
	    {"worker-max-failures", required_argument, 0, OPT_WORKER_MAX_FAILURES},
	    {"null-fail-worker", required_argument, 0, OPT_NULL_FAIL_WORKER},
	    {"null-fail-after", required_argument, 0, OPT_NULL_FAIL_AFTER},
	    {"null-admission-log", required_argument, 0, OPT_NULL_ADMISSION_LOG},
	    {0, 0, 0, 0},
	};
	/* Ours, then the scheduling core's (daemon/sched/options.h), which ringserve-sim
	 * takes too. */
	struct option options[sizeof(own_options) / sizeof(own_options[0]) + RS_SCHED_OPTION_COUNT];
	rs_sched_options_merge(own_options, options);
	const struct rs_sched_options sched = {.admission = &config.admission,
					       .prefix_cache = &config.prefix_cache,
					       .multibin = &config.multibin,
					       .multibin_params = &config.multibin_params,
					       .dispatch = &config.dispatch};
	char why[128];
	int opt;
	unsigned long value = 0;
	uint32_t n_uids = 0, n_gids = 0;
	unsigned int uids[RS_MAX_ALLOW], gids[RS_MAX_ALLOW];
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		int bad = 0;
		switch (opt) {
		case OPT_SOCKET:
			config.socket_path = optarg;
			break;
		case OPT_SOCKET_MODE:
			bad = rs_parse_unsigned(optarg, 8, 0, 0777, &value);
			config.socket_mode = (mode_t)value;
			break;
		case OPT_ALLOW_UID:
			bad = parse_id_list(optarg, false, uids, &n_uids);
			break;
		case OPT_ALLOW_GID:
			bad = parse_id_list(optarg, true, gids, &n_gids);
			break;
		case OPT_CPU:
			bad = rs_parse_unsigned(optarg, 10, 0, 65535, &value);
			config.cpu = (int)value;
			break;
		case OPT_MAX_CLIENTS:
			bad = rs_parse_unsigned(optarg, 10, 1, 65536, &value);
			config.max_clients = (uint32_t)value;
			break;
		case OPT_RING_ENTRIES:
			bad = rs_parse_unsigned(optarg, 10, 1, RS_MAX_RING_ENTRIES, &value) ||
			      (value & (value - 1));
			config.ring_entries = (uint32_t)value;
			break;
		case OPT_SLOTS:
			bad = rs_parse_unsigned(optarg, 10, 1, RS_MAX_SLOTS, &value);
			config.slots = (uint32_t)value;
			break;
		case OPT_MAX_INFLIGHT:
			bad = rs_parse_unsigned(optarg, 10, 1, RS_MAX_SLOTS, &value);
			config.max_inflight = (uint32_t)value;
			break;
		case OPT_MAX_PROMPT:
			bad = rs_parse_unsigned(optarg, 10, 1, RS_MAX_SLOT_TOKENS, &value);
			config.max_prompt_tokens = (uint32_t)value;
			break;
		case OPT_MAX_OUTPUT:
			bad = rs_parse_unsigned(optarg, 10, 1, RS_MAX_SLOT_TOKENS, &value);
			config.max_output_tokens = (uint32_t)value;
			break;
		case OPT_SPIN_US:
			bad = rs_parse_unsigned(optarg, 10, 0, 10000000, &value);
			config.spin_ns = value * 1000;
			break;
		case OPT_GRACE_MS:
			bad = rs_parse_unsigned(optarg, 10, 0, 3600000, &value);
			config.grace_ns = value * 1000000ull;
			break;
		case OPT_EVENTFD:
			config.force_eventfd = true;
			break;
		case OPT_ENGINE:
			engine_name = optarg;
			break;
		case OPT_NULL_VOCAB:
			bad = rs_parse_unsigned(optarg, 10, 1, UINT32_MAX, &value);
			null_options.vocab_size = (uint32_t)value;
			break;
		case OPT_NULL_DELAY_US:
			bad = rs_parse_unsigned(optarg, 10, 0, 10000000, &value);
			null_options.token_delay_ns = value * 1000;
			break;
		case OPT_LANES:
			bad = rs_parse_unsigned(optarg, 10, 1, 64, &value);
			null_options.lanes = (uint32_t)value;
			break;
		case OPT_MAX_BATCH:
			bad = rs_parse_unsigned(optarg, 10, 1, 65536, &value);
			null_options.max_batch = (uint32_t)value;
			break;
		case OPT_VERBOSE:
			config.verbose = true;
			break;
		case OPT_HELP:
			usage(stdout);
			return 0;
		case OPT_MODEL:
			model_options.model_path = optarg;
			break;
		case OPT_TOKENIZER:
			model_options.tokenizer_path = optarg;
			break;
		case OPT_BACKEND:
			model_options.backend = optarg;
			break;
		case OPT_KV_DTYPE:
			model_options.kv_dtype = optarg;
			break;
		case OPT_STEP_LOG:
			step_log_path = optarg;
			break;
		case OPT_NULL_ADMISSION_LOG:
			admission_log_path = optarg;
			break;
		case OPT_THREADS:
			bad = rs_parse_unsigned(optarg, 10, 1, 1024, &value);
			model_options.threads = (int)value;
			break;
		case OPT_KV_BLOCKS:
			bad = rs_parse_unsigned(optarg, 10, 1, 1u << 24, &value);
			model_options.kv_blocks = null_options.kv_blocks = (uint32_t)value;
			break;
		case OPT_MAX_BATCH_TOKENS:
			bad = rs_parse_unsigned(optarg, 10, 1, 1u << 20, &value);
			model_options.max_batch_tokens = null_options.max_batch_tokens =
			    (uint32_t)value;
			break;
		case OPT_WORKERS:
			bad = rs_parse_unsigned(optarg, 10, 1, 256, &value);
			workers = (uint32_t)value;
			break;
		case OPT_WORKER_MAX_FAILURES:
			bad = rs_parse_unsigned(optarg, 10, 0, 1u << 30, &value);
			config.dispatch.max_failures = (uint32_t)value;
			break;
		case OPT_NULL_FAIL_WORKER:
			bad = rs_parse_unsigned(optarg, 10, 0, 255, &value);
			fail_worker = (int)value;
			break;
		case OPT_NULL_FAIL_AFTER:
			bad = rs_parse_unsigned(optarg, 10, 0, ULONG_MAX, &value);
			null_options.fail_after_steps = value;
			break;
		case OPT_MAX_TENANTS:
			bad = rs_parse_unsigned(optarg, 10, 1, 1u << 20, &value);
			config.max_tenants = (uint32_t)value;
			break;
		case OPT_CONFIG:
			config.tenant_config_path = optarg;
			break;
		case OPT_READY_FD:
			bad = rs_parse_unsigned(optarg, 10, 0, INT_MAX, &value);
			ready_fd = (int)value;
			break;
		default:
			if (!rs_sched_option_is(opt)) {
				usage(stderr);
				return 2;
			}
			bad = rs_sched_option_parse(&sched, opt, optarg, why, sizeof(why)) != 0;
			break;
		}
		if (bad) {
			fprintf(stderr, "ringserved: bad value for --%s: %s\n",
				rs_option_name(options, opt), optarg);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (rs_sched_options_check(&sched, why, sizeof(why))) {
		fprintf(stderr, "ringserved: %s\n", why);
		return 2;
	}
	if (config.multibin && config.multibin_params.batch > null_options.max_batch) {
		fprintf(stderr, "ringserved: --bin-batch %u is more than --max-batch %u\n",
			config.multibin_params.batch, null_options.max_batch);
		return 2;
	}
	/* Default allow-list: our own user and root. */
	if (n_uids == 0 && n_gids == 0) {
		uids[n_uids++] = getuid();
		if (getuid() != 0)
			uids[n_uids++] = 0;
	}
	for (uint32_t i = 0; i < n_uids; i++)
		config.allow_uids[config.n_allow_uids++] = uids[i];
	for (uint32_t i = 0; i < n_gids; i++)
		config.allow_gids[config.n_allow_gids++] = gids[i];
	if (!config.socket_path)
		config.socket_path = default_socket_path();
	if (config.tenant_config_path) {
		/* A malformed file stops us here, before anything starts. */
		char message[512];
		if (rs_tenant_config_load(config.tenant_config_path, &config.tenants, message,
					  sizeof(message))) {
			fprintf(stderr, "ringserved: --config: %s\n", message);
			return 2;
		}
	}

	signal(SIGPIPE, SIG_IGN);

	struct rs_serving_engine *engine = NULL;
	struct rs_serving_engine *instances[256] = {NULL};
	int ret = 0;
	if (!engine_name)
		engine_name = model_options.model_path ? "model" : "null";
	if (strcmp(engine_name, "null") != 0 &&
	    !(strcmp(engine_name, "model") == 0 && model_options.model_path)) {
		fprintf(stderr, "ringserved: unknown engine '%s' (null, or model with --model)\n",
			engine_name);
		return 2;
	}
	if (config.dispatch.at_arrival && config.dispatch.policy == RS_DISPATCH_D2LPM) {
		fprintf(stderr, "ringserved: --dispatch-at arrival is for the baselines (d2lpm's "
				"workers choose at admission)\n");
		return 2;
	}
	if (fail_worker >= 0 &&
	    (strcmp(engine_name, "null") != 0 || (uint32_t)fail_worker >= workers)) {
		fprintf(stderr, "ringserved: --null-fail-worker needs the null engine and a worker "
				"below --workers\n");
		return 2;
	}
	if (step_log_path && strcmp(engine_name, "model") != 0) {
		fprintf(stderr, "ringserved: --step-log needs --model (the null engine's steps "
				"take --null-delay-us)\n");
		return 2;
	}
	if (admission_log_path && strcmp(engine_name, "null") != 0) {
		fprintf(stderr, "ringserved: --null-admission-log needs the null engine\n");
		return 2;
	}
	if (admission_log_path) {
		null_options.admission_log = fopen(admission_log_path, "w");
		if (!null_options.admission_log) {
			fprintf(stderr, "ringserved: --null-admission-log %s: %s\n",
				admission_log_path, strerror(errno));
			return 1;
		}
	}
	if (step_log_path) {
		model_options.step_log = fopen(step_log_path, "w");
		if (!model_options.step_log) {
			fprintf(stderr, "ringserved: --step-log %s: %s\n", step_log_path,
				strerror(errno));
			return 1;
		}
		fprintf(model_options.step_log,
			"# ringserved step log: rows tokens pairs seconds\n");
	}
	/* CPU workers split the cores: each instance gets its share of --threads (all CPUs
	 * when not given). */
	if (workers > 1 && model_options.threads == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		model_options.threads = cpus > (long)workers ? (int)(cpus / workers) : 1;
	} else if (workers > 1) {
		model_options.threads =
		    model_options.threads > (int)workers ? model_options.threads / (int)workers : 1;
	}
	uint32_t created = 0;
	for (; created < workers && ret == 0; created++) {
		if (strcmp(engine_name, "null") == 0) {
			null_options.fail_steps = (int)created == fail_worker;
			ret = rs_null_engine_create(&null_options, &instances[created]);
		} else {
			model_options.lanes = null_options.lanes;
			model_options.max_batch = null_options.max_batch;
			/* One loaded model for all workers: the CPU backend packs it once. */
			model_options.same_model_as = created ? instances[0] : NULL;
			ret = rs_model_engine_create(&model_options, &instances[created]);
		}
	}
	if (ret) {
		for (uint32_t i = 0; i < created; i++)
			if (instances[i])
				instances[i]->ops->destroy(instances[i]);
	} else if (workers > 1) {
		ret = rs_workers_engine_create(instances, workers, &engine);
	} else {
		engine = instances[0];
	}
	if (ret) {
		fprintf(stderr, "ringserved: cannot create the %s engine: %s\n", engine_name,
			strerror(-ret));
		return 1;
	}
	struct rs_daemon daemon;
	ret = rs_daemon_init(&daemon, &config, engine);
	if (ready_fd >= 0) {
		/* Tell whoever started us that the socket accepts connections (or that we
		 * failed: EOF without the byte). */
		if (ret == 0 && write(ready_fd, "1", 1) != 1)
			ret = -errno;
		close(ready_fd);
	}
	if (ret == 0) {
		/* Not fatal: a stale NOTIFY_SOCKET in a shell's environment must not stop us. */
		int notify_ret = rs_systemd_notify("READY=1");
		if (notify_ret)
			fprintf(stderr, "ringserved: sd_notify READY=1: %s\n",
				strerror(-notify_ret));
	}
	if (ret == 0)
		ret = rs_daemon_run(&daemon);
	rs_daemon_destroy(&daemon);
	if (null_options.admission_log && fclose(null_options.admission_log)) {
		fprintf(stderr, "ringserved: --null-admission-log %s: %s\n", admission_log_path,
			strerror(errno));
		ret = -EIO;
	}
	if (model_options.step_log && fclose(model_options.step_log)) {
		fprintf(stderr, "ringserved: --step-log %s: %s\n", step_log_path, strerror(errno));
		ret = -EIO;
	}
	return ret ? 1 : 0;
}
