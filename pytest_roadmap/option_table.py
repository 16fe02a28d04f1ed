"""The settings' options and ini keys, as literals. Generated: do not edit.

After changing a Spec in settings.py, write it again with

    python -m pytest_roadmap.settings > pytest_roadmap/option_table.py
    ruff format pytest_roadmap/option_table.py
"""

# (option, dest, ini key, help) of each setting, in the order --help lists them.
OPTIONS: tuple[tuple[str | None, str, str | None, str], ...] = (
    (
        "--roadmap-api",
        "roadmap_api",
        "roadmap_api",
        "Base URL of the code-generation API, or 'sandbox' for the embedded sandbox (env BEAST_MODE_API; default: sandbox).",
    ),
    (
        "--roadmap-model",
        "roadmap_model",
        "roadmap_model",
        "Model asked for in each request (env CUSTOM_MODEL).",
    ),
    (None, "concurrency", None, "Workers when -n is not given."),
    (
        "--roadmap-inflight",
        "roadmap_inflight",
        "roadmap_inflight",
        "Task requests each worker keeps in flight (env ROADMAP_INFLIGHT; default 1): the run's concurrency is workers x this. Raise it rather than -n when answers are slow and the API takes many at once; the limits and budgets hold whatever it is.",
    ),
    (
        "--roadmap-rate-limit",
        "roadmap_rate_limit",
        "roadmap_rate_limit",
        "Requests per second across all workers, health probes included, or with a unit: 500/min, 8/s (env RATE_LIMIT; default 10).",
    ),
    (
        "--roadmap-burst",
        "roadmap_burst",
        "roadmap_burst",
        "Requests that may go out back to back (default 1).",
    ),
    (
        "--roadmap-timeout",
        "roadmap_timeout",
        "roadmap_timeout",
        "Seconds per attempt (env TASK_TIMEOUT in milliseconds; default 30).",
    ),
    (
        "--roadmap-tasks",
        "roadmap_tasks",
        "roadmap_tasks",
        "Folder of task files (default roadmap_tasks under the rootdir).",
    ),
    (
        "--roadmap-report",
        "roadmap_report",
        "roadmap_report",
        "Folder for report.json, report.md and report.html.",
    ),
    (
        "--roadmap-tracker",
        "roadmap_tracker",
        "roadmap_tracker",
        "Roadmap progress file to update (never on the sandbox).",
    ),
    (
        "--roadmap-health-path",
        "roadmap_health_path",
        "roadmap_health_path",
        "Path probed before each task (any 2xx is healthy); default /api/health, or /models with --roadmap-protocol openai.",
    ),
    (
        "--roadmap-health-interval",
        "roadmap_health_interval",
        "roadmap_health_interval",
        "Seconds between monitoring ticks and concurrency adjustments (default 5).",
    ),
    (
        "--roadmap-health-wait",
        "roadmap_health_wait",
        "roadmap_health_wait",
        "Seconds a task waits for an unhealthy API before it fails (default 60).",
    ),
    (
        "--roadmap-retry-delay",
        "roadmap_retry_delay",
        "roadmap_retry_delay",
        "Milliseconds before the first retry (default 2000).",
    ),
    (
        "--roadmap-backoff",
        "roadmap_backoff",
        "roadmap_backoff",
        "Factor the retry delay grows by after each attempt (default 1.5).",
    ),
    (
        "--roadmap-max-delay",
        "roadmap_max_delay",
        "roadmap_max_delay",
        "Cap on one retry delay, in milliseconds (default 30000).",
    ),
    (
        "--roadmap-max-queue",
        "roadmap_max_queue",
        "roadmap_max_queue",
        "Most tasks one run takes; the rest are skipped (0: no limit).",
    ),
    (
        "--roadmap-adaptive",
        "roadmap_adaptive",
        "roadmap_adaptive",
        "How the run learns the API's limits: aimd (default; each refusal for load halves the concurrency limit, a 429 lowers the send rate, both grow back), seed (the original system's rule: the limit moves by one per health interval), off (limit and rate as configured). Retry-After and rate-limit headers are obeyed in every mode.",
    ),
    (
        "--roadmap-max-wait",
        "roadmap_max_wait",
        "roadmap_max_wait",
        "Longest the run waits for an API that refuses for load or asks it to wait: a Retry-After beyond it means the quota is exhausted and the run stops starting tasks; a task refused for load longer than it fails (default 300).",
    ),
    (
        "--roadmap-ca-bundle",
        "roadmap_ca_bundle",
        "roadmap_ca_bundle",
        "CA bundle for TLS verification (verification is always on).",
    ),
    (
        "--roadmap-batches",
        "roadmap_batches",
        "roadmap_batches",
        "Run in batch mode from this JSON batch file (the original BATCH_CONFIG.json format).",
    ),
    (
        "--roadmap-store",
        "roadmap_store",
        "roadmap_store",
        "Coordination store shared by every worker, e.g. redis://host:6379/0 for CI shards (env ROADMAP_STORE; default: an SQLite file private to the run).",
    ),
    (
        "--roadmap-run-id",
        "roadmap_run_id",
        None,
        "Runs with the same id share one rate limit, concurrency limit and batch order through the store (env ROADMAP_RUN_ID; default: a new id per run).",
    ),
    (
        "--roadmap-shards",
        "roadmap_shards",
        "roadmap_shards",
        "How many runs share the run id (CI shards): batches and dependencies wait until all of them have announced their tasks (env ROADMAP_SHARDS; default 1).",
    ),
    (
        "--roadmap-shard-wait",
        "roadmap_shard_wait",
        "roadmap_shard_wait",
        "Seconds a batch or dependency waits for the other shards to start before its task fails (default 600).",
    ),
    (
        "--roadmap-max-body",
        "roadmap_max_body",
        "roadmap_max_body",
        "Largest answer body read from the API, after decompression; a larger one fails the task (default 10MB).",
    ),
    (
        "--roadmap-redirect-hosts",
        "roadmap_redirect_hosts",
        "roadmap_redirect_hosts",
        "Other hosts the API may redirect requests to (the token is never sent there); default: none, a redirect is followed only on the API's own scheme, host and port.",
    ),
    (
        "--roadmap-protocol",
        "roadmap_protocol",
        "roadmap_protocol",
        "The API's protocol: beast (POST {api}/api/codebase/chat, the default) or openai (POST {api}/chat/completions, with {api} like https://host/v1) (env ROADMAP_PROTOCOL).",
    ),
    (
        "--roadmap-token-rate",
        "roadmap_token_rate",
        "roadmap_token_rate",
        "Tokens per minute across all workers and shards (prompt and completion, as the answers' usage counts them), or with a unit: 90000/min, 1500/s; default: no token limit.",
    ),
    (
        "--roadmap-price-in",
        "roadmap_price_in",
        "roadmap_price_in",
        "Price per million prompt tokens: report.json and the reports show each task's cost (default: no price, no cost).",
    ),
    (
        "--roadmap-price-out",
        "roadmap_price_out",
        "roadmap_price_out",
        "Price per million completion tokens (default: no price, no cost).",
    ),
    (
        "--roadmap-max-retries",
        "roadmap_max_retries",
        "roadmap_max_retries",
        "Retries across the whole run, every worker and shard sharing the store; once spent, failures are final (env ROADMAP_MAX_RETRIES; default: only --reruns per task).",
    ),
    (
        "--roadmap-max-tokens",
        "roadmap_max_tokens",
        "roadmap_max_tokens",
        "Tokens the whole run may use (openai protocol): a task starts only if its prompt plus max_tokens fits; once spent, the rest are skipped (env ROADMAP_MAX_TOKENS).",
    ),
    (
        "--roadmap-max-cost",
        "roadmap_max_cost",
        "roadmap_max_cost",
        "US dollars the whole run may spend at --roadmap-price-in/-out (openai protocol): a task starts only if its most expensive answer fits (env ROADMAP_MAX_COST).",
    ),
    (
        "--roadmap-deadline",
        "roadmap_deadline",
        "roadmap_deadline",
        "Time the run may take from its start, e.g. 45m: when the remaining tasks cannot finish in time, the lowest-priority ones are not started (skipped, naming the deadline); time to write the reports and the tracker is kept (env ROADMAP_DEADLINE).",
    ),
    (
        "--roadmap-expected-latency",
        "roadmap_expected_latency",
        "roadmap_expected_latency",
        "Seconds one request takes, for --roadmap-plan and the deadline's first forecast (default: what the last report measured for these tasks) (env ROADMAP_EXPECTED_LATENCY).",
    ),
    (
        "--roadmap-check-retries",
        "roadmap_check_retries",
        "roadmap_check_retries",
        "New answers asked for when an answer fails its checks (a task's check_retries wins; env ROADMAP_CHECK_RETRIES; default 0: a wrong answer fails the task).",
    ),
    (
        "--roadmap-check-timeout",
        "roadmap_check_timeout",
        "roadmap_check_timeout",
        "Seconds a command check may run before its whole process group is killed (a check's own timeout wins; env ROADMAP_CHECK_TIMEOUT; default 60).",
    ),
    (
        "--roadmap-grader-model",
        "roadmap_grader_model",
        "roadmap_grader_model",
        "Model that grades rubric checks, through the same API and safeguards (env ROADMAP_GRADER_MODEL; default: the run's model).",
    ),
)
# Where the tasks folder's value may come from, and its default (options.tasks_dir_of).
TASKS_DIR_DEST: str = "roadmap_tasks"
TASKS_DIR_ENV: str | None = None
TASKS_DIR_INI: str | None = "roadmap_tasks"
TASKS_DIR_DEFAULT: str = "roadmap_tasks"
