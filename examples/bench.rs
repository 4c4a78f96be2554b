//! The benchmark of credit-ledger: the service's throughput, latency and memory, each figure
//! beside PostgreSQL's own limit for the same work, measured with pgbench in the same run.
//!
//! ```sh
//! cargo run --release --example bench                  # everything, 10 s per workload
//! cargo run --release --example bench -- --seconds 30 --runs 5 --json > results.json
//! cargo run --release --example bench -- --only A --soak 600   # memory over a 10-minute soak
//! ```
//!
//! It needs PostgreSQL on 127.0.0.1:5432 where `postgres` connects without a password (as for
//! the tests; `--database-url` points elsewhere) and `pgbench` on the PATH (package
//! `postgresql-client` or `postgresql-contrib`). BENCHMARKS.md describes the method.
//!
//! What one run does:
//! 1. PostgreSQL's limit: in a scratch database, pgbench runs the one-statement debit, `UPDATE
//!    acct SET balance = balance - 1 WHERE id = :id AND balance >= 1` with its journal `INSERT`
//!    in one statement (one transaction each, prepared), with the same number of clients, uniform
//!    over `--accounts` rows and then on one row.
//! 2. The service: `cargo build --release --bin credit-ledger` (when run by cargo), then the
//!    binary is started on a fresh database, on a free loopback port, with its Unkey pointed at a
//!    double inside this process that answers at once; a plan with a huge allowance and
//!    `--accounts` accounts are created through the HTTP API.
//! 3. Closed-loop workloads with `--clients` clients, each after a warm-up: A uniform debits,
//!    then a fixed-rate (open-loop) run of uniform debits at half of A's peak, B debits on one
//!    hot key, C reserve-then-commit pairs, D `/v1/verify`, E balance reads.
//! 4. Optionally (`--soak SECONDS`) a mixed load while the service's resident memory is sampled.
//! 5. The service is stopped and every database it made is dropped, also on an error, Ctrl-C or
//!    SIGTERM.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

type Res<T> = Result<T, String>;

/// Adds what was being done to an error, as a sentence a user can act on.
trait Context<T> {
    fn context(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "The credit-ledger benchmark: workloads A–E, a fixed-rate run and pgbench's limit"
)]
struct Options {
    /// Measured seconds per workload (and per pgbench run).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds before each workload, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent clients, for the workloads and pgbench alike.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Accounts seeded (and rows in pgbench's table).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Complete runs (each with a fresh service and database); with more than one, the medians
    /// of every figure are printed after the runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Only these parts, comma-separated: pg, A, fixed, B, C, D, E (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the fixed-rate run.
    #[arg(long)]
    no_fixed_rate: bool,
    /// Requests per second of the fixed-rate run (default: half of A's peak in the same run).
    #[arg(long)]
    rate: Option<f64>,
    /// After the last run's workloads, a mixed load for this many seconds while the service's
    /// resident memory (VmRSS) is sampled; prints the curve.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Seconds between two memory samples of the soak.
    #[arg(long, default_value_t = 5)]
    soak_interval: u64,
    /// A PostgreSQL database to connect to for creating and dropping the bench's databases
    /// (the server they are made on).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// The service binary (default: credit-ledger beside this example, built by cargo first).
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// Extra environment of the service, e.g. `--env LEDGER_DB_MAX_CONNECTIONS=40` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    service_env: Vec<String>,
    /// Print the results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
}

impl Options {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p.eq_ignore_ascii_case(part))
    }
}

const ADMIN_TOKEN: &str = "bench-admin";
const SERVICE_TOKEN: &str = "bench-service";
const UNKEY_ROOT_KEY: &str = "bench-unkey-root";
const PLAN: &str = "bench";
const DEBIT_BODY: &str = r#"{"operation":"op"}"#;
const RESERVE_BODY: &str = r#"{"operation":"op","ttl_seconds":600}"#;

fn account(i: usize) -> String {
    format!("bench-{i}")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let outcome = tokio::select! {
        outcome = bench(&options) => outcome,
        stop = stop_signal() => Err(stop.to_owned()),
    };
    // Whatever happened, the guards of the futures dropped above have stopped the service and
    // dropped the databases by now.
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM: the bench stops, and its guards stop the service and drop the databases.
async fn stop_signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => term.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminated => "terminated",
    }
}

async fn bench(options: &Options) -> Res<()> {
    if options.clients == 0 || options.accounts == 0 || options.seconds == 0 || options.runs == 0 {
        return Err("--clients, --accounts, --seconds and --runs must be at least 1".into());
    }
    for part in &options.only {
        if !["pg", "a", "fixed", "b", "c", "d", "e"].contains(&part.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "--only {part}: the parts are pg, A, fixed, B, C, D, E"
            ));
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: this bench is a debug build; run it with `cargo run --release --example bench`");
    }
    let pg = Pg::parse(&options.database_url)?;
    let mut admin = pg.connect(&pg.database).await?;
    let postgres: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut admin)
        .await
        .context("SELECT version()")?;
    admin.close().await.ok();
    let service_bin = service_binary(options)?;
    let temp = TempDir::new()?;
    let about = about_machine(&postgres).await;
    if !options.json {
        print_about(&about, options);
    }

    let mut runs = Vec::new();
    for run in 1..=options.runs {
        eprintln!("bench: run {run} of {}", options.runs);
        let soak = if run == options.runs {
            options.soak
        } else {
            None
        };
        let result = one_run(options, &pg, &service_bin, &temp.path, soak).await?;
        if !options.json {
            println!();
            println!("== run {run} of {} ==", options.runs);
            print_figures(&result.figures, options);
            if let Some(soak) = &result.soak {
                print_soak(soak);
            }
        }
        runs.push(result);
    }
    let medians = medians(runs.iter().map(|r| &r.figures));
    if !options.json && options.runs > 1 {
        println!();
        println!("== medians of {} runs ==", options.runs);
        print_figures(&medians, options);
    }
    if options.json {
        let document = json!({
            "about": about,
            "options": {
                "seconds": options.seconds, "warmup": options.warmup, "clients": options.clients,
                "accounts": options.accounts, "runs": options.runs,
            },
            "runs": runs.iter().map(|r| json!({"figures": r.figures, "soak": r.soak})).collect::<Vec<_>>(),
            "medians": medians,
            "targets": targets(&medians).iter().map(|t| json!({
                "target": t.name, "value": t.value, "met": t.met(),
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).context("JSON")?
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run: pgbench, then the service and its workloads.

/// Every figure of one run, by name: `A.per_s`, `B.p99_ms`, `ratio.C/A`, `pg.uniform.tps`, …
type Figures = BTreeMap<String, f64>;

struct RunResult {
    figures: Figures,
    soak: Option<Value>,
}

async fn one_run(
    options: &Options,
    pg: &Pg,
    service_bin: &Path,
    temp: &Path,
    soak: Option<u64>,
) -> Res<RunResult> {
    let mut figures = Figures::new();
    let mut guard = Guard::new(pg.clone());
    if options.wants("pg") {
        match which("pgbench") {
            Some(_) => pg_limits(options, pg, temp, &mut guard, &mut figures).await?,
            None => eprintln!(
                "bench: warning: pgbench is not on the PATH (apt-get install postgresql-client): no PostgreSQL limit, no ratios to it"
            ),
        }
    }
    let wants_service = ["a", "fixed", "b", "c", "d", "e"]
        .iter()
        .any(|p| options.wants(p))
        || soak.is_some();
    let mut soak_result = None;
    if wants_service {
        let service = start_service(options, pg, service_bin, temp, &mut guard).await?;
        let measured = async {
            workloads(options, &service, &mut figures).await?;
            if let Some(seconds) = soak {
                soak_result = Some(run_soak(options, &service, seconds).await?);
            }
            Ok::<(), String>(())
        };
        measured.await.map_err(|e| {
            format!(
                "{e}\nthe service's log ends:\n{}",
                log_tail(&service.log_path)
            )
        })?;
        figures.insert("service.peak_rss_mib".into(), service.peak_rss_mib());
    }
    add_ratios(&mut figures);
    guard.cleanup().await;
    Ok(RunResult {
        figures,
        soak: soak_result,
    })
}

fn add_ratios(figures: &mut Figures) {
    let get = |f: &Figures, k: &str| f.get(k).copied().filter(|v| *v > 0.0);
    let pairs = [
        ("ratio.A/pg", "A.per_s", "pg.uniform.tps"),
        ("ratio.B/pg1", "B.per_s", "pg.one_row.tps"),
        ("ratio.C/pg", "C.per_s", "pg.uniform.tps"),
        ("ratio.D/pg", "D.per_s", "pg.uniform.tps"),
        ("ratio.E/pg", "E.per_s", "pg.uniform.tps"),
        ("ratio.B/A", "B.per_s", "A.per_s"),
        ("ratio.C/A", "C.per_s", "A.per_s"),
        ("ratio.D/A", "D.per_s", "A.per_s"),
        ("ratio.E/A", "E.per_s", "A.per_s"),
        ("ratio.fixed.p99/p50", "fixed.p99_ms", "fixed.p50_ms"),
    ];
    for (name, numerator, denominator) in pairs {
        if let (Some(n), Some(d)) = (get(figures, numerator), get(figures, denominator)) {
            figures.insert(name.into(), n / d);
        }
    }
}

fn medians<'a>(runs: impl Iterator<Item = &'a Figures>) -> Figures {
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for figures in runs {
        for (k, v) in figures {
            all.entry(k.clone()).or_default().push(*v);
        }
    }
    all.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len();
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            (k, median)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: connection settings, scratch databases, pgbench.

/// The PostgreSQL server the bench makes its databases on.
#[derive(Clone)]
struct Pg {
    url: reqwest::Url,
    database: String,
}

impl Pg {
    fn parse(raw: &str) -> Res<Pg> {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| format!("--database-url {raw:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none() {
            return Err(format!(
                "--database-url must look like postgres://user@host:port/database, not {raw:?}"
            ));
        }
        let database = url.path().trim_start_matches('/').to_owned();
        let database = if database.is_empty() {
            "postgres".to_owned()
        } else {
            database
        };
        Ok(Pg { url, database })
    }

    fn url_of(&self, database: &str) -> String {
        let mut url = self.url.clone();
        url.set_path(&format!("/{database}"));
        url.to_string()
    }

    /// The URL with the password hidden, for messages.
    fn shown(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    async fn connect(&self, database: &str) -> Res<PgConnection> {
        PgConnection::connect(&self.url_of(database))
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to PostgreSQL at {} (database {database}): {e}; start PostgreSQL or set --database-url",
                    self.shown()
                )
            })
    }

    async fn drop_database(&self, name: &str) -> Res<()> {
        let mut conn = self.connect(&self.database).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .context(format!("DROP DATABASE {name}"))?;
        conn.close().await.ok();
        Ok(())
    }

    /// pgbench's connection arguments and environment.
    fn pgbench_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("pgbench");
        command
            .arg("-h")
            .arg(self.url.host_str().unwrap_or("127.0.0.1"))
            .arg("-p")
            .arg(self.url.port().unwrap_or(5432).to_string());
        if !self.url.username().is_empty() {
            command.arg("-U").arg(self.url.username());
        }
        if let Some(password) = self.url.password() {
            command.env("PGPASSWORD", password);
        }
        command
    }
}

/// pgbench, uniform over the rows and on one row, in a scratch database of its own.
async fn pg_limits(
    options: &Options,
    pg: &Pg,
    temp: &Path,
    guard: &mut Guard,
    figures: &mut Figures,
) -> Res<()> {
    let database = format!("bench_pg_{}", uuid::Uuid::new_v4().simple());
    let mut admin = pg.connect(&pg.database).await?;
    sqlx::query(&format!("CREATE DATABASE \"{database}\""))
        .execute(&mut admin)
        .await
        .context("CREATE DATABASE for pgbench")?;
    admin.close().await.ok();
    guard.databases.push(database.clone());
    let mut conn = pg.connect(&database).await?;
    for statement in [
        "CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)".to_owned(),
        "CREATE TABLE journal (id bigserial, acct int, amount bigint, at timestamptz DEFAULT now())"
            .to_owned(),
        format!(
            "INSERT INTO acct SELECT g, 1000000000000 FROM generate_series(1, {}) g",
            options.accounts
        ),
    ] {
        sqlx::query(&statement)
            .execute(&mut conn)
            .await
            .context(format!("pgbench set-up: {statement}"))?;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(options.clients);
    for (name, choose) in [
        (
            "uniform",
            format!("\\set id random(1, {})", options.accounts),
        ),
        ("one_row", "\\set id 1".to_owned()),
    ] {
        for statement in ["TRUNCATE journal", "VACUUM ANALYZE acct", "CHECKPOINT"] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .context(format!("pgbench set-up: {statement}"))?;
        }
        let script = temp.join(format!("pgbench-{name}.sql"));
        std::fs::write(
            &script,
            format!(
                "{choose}\nWITH d AS (UPDATE acct SET balance = balance - 1 WHERE id = :id AND balance >= 1 RETURNING id) INSERT INTO journal (acct, amount) SELECT id, -1 FROM d;\n"
            ),
        )
        .context(format!("writing {}", script.display()))?;
        eprintln!(
            "bench: pgbench {name}: {} clients, {threads} threads, {} s",
            options.clients, options.seconds
        );
        let prefix = format!("pgbench-log-{name}-{}", uuid::Uuid::new_v4().simple());
        let output = pg
            .pgbench_command()
            .arg("-n")
            .arg("-M")
            .arg("prepared")
            .arg("-c")
            .arg(options.clients.to_string())
            .arg("-j")
            .arg(threads.to_string())
            .arg("-T")
            .arg(options.seconds.to_string())
            .arg("-f")
            .arg(&script)
            .arg("-l")
            .arg(format!("--log-prefix={prefix}"))
            .arg(&database)
            .current_dir(temp)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "pgbench failed ({}): {}{}",
                output.status,
                stdout.trim(),
                stderr.trim()
            ));
        }
        let tps = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| format!("no `tps = …` line in pgbench's output:\n{stdout}"))?;
        let failed = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        let latencies = pgbench_latencies(temp, &prefix)?;
        figures.insert(format!("pg.{name}.tps"), tps);
        figures.insert(format!("pg.{name}.errors"), failed);
        put_latencies(figures, &format!("pg.{name}"), &latencies);
    }
    conn.close().await.ok();
    pg.drop_database(&database).await?;
    guard.databases.retain(|d| d != &database);
    Ok(())
}

/// Reads pgbench's per-transaction logs (`client transaction latency_us script epoch us`), then
/// removes them.
fn pgbench_latencies(dir: &Path, prefix: &str) -> Res<Histogram<u64>> {
    let mut histogram = new_histogram();
    for entry in std::fs::read_dir(dir).context("reading pgbench's logs")? {
        let path = entry.context("reading pgbench's logs")?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix));
        if !is_log {
            continue;
        }
        let text = std::fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<u64>().ok())
            {
                histogram.saturating_record(us.max(1));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(histogram)
}

// ---------------------------------------------------------------------------------------------
// The service: build, start, seed, stop.

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The credit-ledger binary: `--service-bin`, else the one beside this example — built first
/// when this bench runs under cargo, so that it is never stale.
fn service_binary(options: &Options) -> Res<PathBuf> {
    if let Some(path) = &options.service_bin {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(format!("--service-bin {}: no such file", path.display()))
        };
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    // target/<profile>/examples/bench → target/
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or("cannot tell the target directory from this executable's path")?;
    let binary = target.join("release").join("credit-ledger");
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("bench: cargo build --release --bin credit-ledger");
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--bin",
                "credit-ledger",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::null())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            return Err(format!(
                "cargo build --release --bin credit-ledger failed ({status})"
            ));
        }
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "the service binary {} is missing: run `cargo build --release --bin credit-ledger` first, or pass --service-bin",
            binary.display()
        ))
    }
}

/// What must be undone: the service process and the databases. `cleanup` does it; `Drop` does
/// it too when the run ends early (an error, a panic, Ctrl-C).
struct Guard {
    pg: Pg,
    service: Option<std::process::Child>,
    databases: Vec<String>,
}

impl Guard {
    fn new(pg: Pg) -> Guard {
        Guard {
            pg,
            service: None,
            databases: Vec::new(),
        }
    }

    fn stop_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn cleanup(&mut self) {
        self.stop_service();
        for database in std::mem::take(&mut self.databases) {
            if let Err(e) = self.pg.drop_database(&database).await {
                eprintln!("bench: warning: {e}");
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_service();
        let databases = std::mem::take(&mut self.databases);
        if databases.is_empty() {
            return;
        }
        let pg = self.pg.clone();
        // Drop cannot await: a thread with a runtime of its own drops the databases.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                for database in databases {
                    pg.drop_database(&database).await?;
                }
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bench: warning: {e}"),
            Err(_) => eprintln!("bench: warning: dropping the bench databases failed"),
        }
    }
}

/// A directory for pgbench's scripts and logs and the service's log, removed at the end.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Res<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "credit-ledger-bench-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).context(format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running service, seeded, with a client for it.
struct Service {
    pid: u32,
    log_path: PathBuf,
    http: Arc<Http>,
    unkey: UnkeyDouble,
    /// The highest peak resident memory seen over the phases (each phase resets the kernel's).
    peak_rss_kib: AtomicU64,
}

impl Service {
    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Current resident memory, MiB.
    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// Starts a phase: the kernel's peak (VmHWM) is reset so that each phase has its own.
    fn begin_phase(&self) {
        self.note_peak();
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }

    /// The peak resident memory since `begin_phase`, MiB.
    fn end_phase(&self) -> f64 {
        self.note_peak();
        self.status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    fn note_peak(&self) {
        if let Some(hwm) = self.status_kib("VmHWM:") {
            self.peak_rss_kib.fetch_max(hwm, Ordering::Relaxed);
        }
    }

    fn peak_rss_mib(&self) -> f64 {
        self.note_peak();
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

async fn start_service(
    options: &Options,
    pg: &Pg,
    binary: &Path,
    temp: &Path,
    guard: &mut Guard,
) -> Res<Service> {
    let unkey = UnkeyDouble::start().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port();
    let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let log_path = temp.join(format!("{database}.log"));
    let log = std::fs::File::create(&log_path).context("creating the service's log")?;
    let mut command = std::process::Command::new(binary);
    command
        .arg("serve")
        .env("DATABASE_URL", pg.url_of(&database))
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("LEDGER_SERVICE_TOKENS", SERVICE_TOKEN)
        .env("UNKEY_ROOT_KEY", UNKEY_ROOT_KEY)
        .env("UNKEY_BASE_URL", &unkey.base_url)
        // One log line per request would measure the terminal; warnings and errors are kept.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("the service's log")?)
        .stderr(log);
    for pair in &options.service_env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--env {pair:?} is not KEY=VALUE"))?;
        command.env(key, value);
    }
    // The database is the service's to create; it is ours to drop.
    guard.databases.push(database.clone());
    let child = command
        .spawn()
        .context(format!("starting {}", binary.display()))?;
    let pid = child.id();
    guard.service = Some(child);
    eprintln!(
        "bench: service pid {pid} on 127.0.0.1:{port}, database {database}, log {}",
        log_path.display()
    );
    let http = Arc::new(Http::new(format!("http://127.0.0.1:{port}"), options)?);

    // Ready when /readyz says so; an early exit is reported with the end of its log.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = guard
            .service
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            return Err(format!(
                "the service exited at start ({status}); its log ends:\n{}",
                log_tail(&log_path)
            ));
        }
        let ready = http
            .client
            .get(format!("{}/readyz", http.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the service was not ready within 60 s; its log ends:\n{}",
                log_tail(&log_path)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let service = Service {
        pid,
        log_path,
        http,
        unkey,
        peak_rss_kib: AtomicU64::new(0),
    };
    service.begin_phase();
    seed(options, &service.http).await?;
    // The planner should know the tables' sizes before the first workload.
    let mut conn = pg.connect(&database).await?;
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .context("ANALYZE")?;
    conn.close().await.ok();
    service.end_phase();
    Ok(service)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A plan whose allowance no run can spend, with a burst limit (so `/v1/verify` makes its
/// `ratelimit.limit` call) no run can reach; then the accounts, `--clients` at a time.
async fn seed(options: &Options, http: &Http) -> Res<()> {
    let started = Instant::now();
    let plan = json!({
        "name": "bench", "interval": "month",
        "pools": {"credits": {"allowance": 1_000_000_000_000_000_i64}},
        "operations": {"op": {"cost": 1}},
        "ratelimits": [{"name": "burst", "limit": 1_000_000, "duration_ms": 60_000}],
    });
    http.send(
        http.client
            .put(format!("{}/v1/plans/{PLAN}", http.base))
            .header(AUTHORIZATION, http.admin.clone())
            .json(&plan),
    )
    .await
    .context("creating the plan")?;
    futures::stream::iter((0..options.accounts).map(Ok))
        .try_for_each_concurrent(options.clients, |i| async move {
            http.send(
                http.client
                    .put(format!("{}/v1/accounts/{}", http.base, account(i)))
                    .header(AUTHORIZATION, http.admin.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(format!(r#"{{"plan":"{PLAN}"}}"#)),
            )
            .await
            .map(drop)
            .context(format!("creating account {}", account(i)))
        })
        .await?;
    eprintln!(
        "bench: seeded a plan and {} accounts in {:.1} s",
        options.accounts,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The HTTP client and the five operations.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A: a debit of 1 credit on a uniformly chosen account.
    Debit,
    /// B: a debit of 1 credit on one hot account.
    HotDebit,
    /// C: a reservation of 1 credit, then its commit.
    Pair,
    /// D: `/v1/verify` of a customer key of a uniformly chosen account.
    Verify,
    /// E: the balance of a uniformly chosen account.
    Balance,
}

fn bearer(token: &str) -> Res<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).context("a token")
}

struct Http {
    client: reqwest::Client,
    base: String,
    admin: HeaderValue,
    service: HeaderValue,
    accounts: usize,
}

impl Http {
    fn new(base: String, options: &Options) -> Res<Http> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Http {
            client,
            base,
            admin: bearer(ADMIN_TOKEN)?,
            service: bearer(SERVICE_TOKEN)?,
            accounts: options.accounts,
        })
    }

    /// Sends a request and reads its body; anything but a 2xx is an error with the body's start.
    async fn send(&self, request: reqwest::RequestBuilder) -> Res<axum::body::Bytes> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            Err(format!("{status}: {text}"))
        }
    }

    fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.service.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
    }

    async fn run(&self, op: Op, rng: &mut Rng) -> Res<()> {
        let key = account(rng.below(self.accounts));
        match op {
            Op::Debit => self
                .send(self.post(&format!("/v1/accounts/{key}/debits"), DEBIT_BODY))
                .await
                .map(drop),
            Op::HotDebit => self
                .send(self.post(&format!("/v1/accounts/{}/debits", account(0)), DEBIT_BODY))
                .await
                .map(drop),
            Op::Pair => {
                let held = self
                    .send(self.post(&format!("/v1/accounts/{key}/reservations"), RESERVE_BODY))
                    .await?;
                let id = serde_json::from_slice::<Value>(&held)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .ok_or("a reservation without an id")?;
                self.send(self.post(&format!("/v1/reservations/{id}/commit"), "{}"))
                    .await
                    .map(drop)
            }
            Op::Verify => self
                .send(self.post(
                    "/v1/verify",
                    format!(r#"{{"key":"sk_{key}","operation":"op"}}"#),
                ))
                .await
                .map(drop),
            Op::Balance => self
                .send(
                    self.client
                        .get(format!("{}/v1/accounts/{key}/balance", self.base))
                        .header(AUTHORIZATION, self.service.clone()),
                )
                .await
                .map(drop),
        }
    }
}

/// splitmix64: each client draws its own accounts, without a lock.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Load: closed loop (A–E, soak) and open loop (fixed rate).

/// Latencies in microseconds, up to a minute.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, u64::MAX as u128) as u64
}

/// What a load measured.
struct Measured {
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn put_latencies(figures: &mut Figures, name: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        figures.insert(
            format!("{name}.{label}_ms"),
            h.value_at_quantile(q) as f64 / 1000.0,
        );
    }
}

/// Counters the soak's sampler reads while the load runs.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
}

/// `clients` clients, each sending its next request when the last one is answered; requests
/// started during the warm-up are not measured, none is started after it plus `measure`.
async fn closed_loop(
    http: Arc<Http>,
    ops: &[Op],
    clients: usize,
    warmup: Duration,
    measure: Duration,
    progress: Arc<Progress>,
) -> Measured {
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + measure;
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, progress, ops) = (Arc::clone(&http), Arc::clone(&progress), ops.to_vec());
            tokio::spawn(async move {
                let mut rng = Rng::new(seed.wrapping_add(c as u64));
                let mut latencies = new_histogram();
                let (mut errors, mut first_error) = (0u64, None);
                let mut n = c;
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let op = ops[n % ops.len()];
                    n += 1;
                    let result = http.run(op, &mut rng).await;
                    match result {
                        Ok(()) => progress.done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => progress.errors.fetch_add(1, Ordering::Relaxed),
                    };
                    if sent < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => latencies.saturating_record(micros(sent.elapsed())),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut measured = Measured {
        latencies: new_histogram(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok((latencies, errors, first_error)) => {
                let _ = measured.latencies.add(&latencies);
                measured.errors += errors;
                if measured.first_error.is_none() {
                    measured.first_error = first_error;
                }
            }
            Err(e) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(e.to_string());
            }
        }
    }
    measured.elapsed = measure_from.elapsed();
    measured
}

/// The most requests the open loop lets be in flight; beyond, a request counts as an error.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 10_000;

/// Request i is sent at `start + i / rate` whatever the earlier ones are doing, and its latency
/// counts from that scheduled instant, so that a slow answer cannot hide the requests that
/// would have waited behind it (no coordinated omission).
async fn open_loop(
    http: Arc<Http>,
    op: Op,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> (Measured, Histogram<u64>) {
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let total = ((warmup + measure).as_secs_f64() * rate).ceil() as u64;
    let shared = Arc::new(Mutex::new((new_histogram(), 0u64, None::<String>)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut lag = new_histogram();
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let measured = due >= measure_from;
        if measured {
            lag.saturating_record(micros(due.elapsed()));
        }
        if in_flight.load(Ordering::Relaxed) >= OPEN_LOOP_MAX_IN_FLIGHT {
            if measured {
                let mut shared = shared.lock().unwrap();
                shared.1 += 1;
                shared
                    .2
                    .get_or_insert_with(|| "too many requests in flight".into());
            }
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let mut request_rng = Rng::new(rng.next());
        let (http, shared, in_flight) = (
            Arc::clone(&http),
            Arc::clone(&shared),
            Arc::clone(&in_flight),
        );
        tasks.push(tokio::spawn(async move {
            let result = http.run(op, &mut request_rng).await;
            let latency = micros(due.elapsed());
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if measured {
                let mut shared = shared.lock().unwrap();
                match result {
                    Ok(()) => shared.0.saturating_record(latency),
                    Err(e) => {
                        shared.1 += 1;
                        shared.2.get_or_insert(e);
                    }
                }
            }
        }));
        if tasks.len() >= 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = measure_from.elapsed();
    let (latencies, errors, first_error) =
        std::mem::replace(&mut *shared.lock().unwrap(), (new_histogram(), 0, None));
    (
        Measured {
            latencies,
            errors,
            first_error,
            elapsed,
        },
        lag,
    )
}

/// A, the fixed-rate run, B, C, D and E, as chosen.
async fn workloads(options: &Options, service: &Service, figures: &mut Figures) -> Res<()> {
    let http = Arc::clone(&service.http);
    let warmup = Duration::from_secs(options.warmup);
    let measure = Duration::from_secs(options.seconds);
    let plan = [
        ("A", Op::Debit, "uniform debits"),
        ("fixed", Op::Debit, "fixed-rate uniform debits"),
        ("B", Op::HotDebit, "hot-key debits"),
        ("C", Op::Pair, "reserve-then-commit pairs"),
        ("D", Op::Verify, "/v1/verify"),
        ("E", Op::Balance, "balance reads"),
    ];
    for (name, op, what) in plan {
        if !options.wants(name) || (name == "fixed" && options.no_fixed_rate) {
            continue;
        }
        let unkey_before = service.unkey.calls.load(Ordering::Relaxed);
        let progress = Arc::new(Progress::default());
        service.begin_phase();
        let measured = if name == "fixed" {
            let rate = match (options.rate, figures.get("A.per_s")) {
                (Some(rate), _) => rate,
                (None, Some(a)) => a / 2.0,
                (None, None) => {
                    return Err(
                        "the fixed-rate run is at half of A's peak: run A too (or give --rate)"
                            .into(),
                    )
                }
            };
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(format!("the fixed rate must be positive, not {rate}"));
            }
            eprintln!(
                "bench: fixed rate: {what} at {rate:.0}/s, {} s + {} s warm-up",
                options.seconds, options.warmup
            );
            let (measured, lag) = open_loop(Arc::clone(&http), op, rate, warmup, measure).await;
            figures.insert("fixed.rate".into(), rate);
            figures.insert(
                "fixed.lag_p99_ms".into(),
                lag.value_at_quantile(0.99) as f64 / 1000.0,
            );
            measured
        } else {
            eprintln!(
                "bench: {name}: {what}, {} clients, {} s + {} s warm-up",
                options.clients, options.seconds, options.warmup
            );
            closed_loop(
                Arc::clone(&http),
                &[op],
                options.clients,
                warmup,
                measure,
                Arc::clone(&progress),
            )
            .await
        };
        figures.insert(format!("{name}.per_s"), measured.per_second());
        figures.insert(format!("{name}.errors"), measured.errors as f64);
        figures.insert(format!("{name}.peak_rss_mib"), service.end_phase());
        put_latencies(figures, name, &measured.latencies);
        if op == Op::Verify {
            // Over the warm-up too: the double counts every call.
            let calls = service.unkey.calls.load(Ordering::Relaxed) - unkey_before;
            let requests = (progress.done.load(Ordering::Relaxed)
                + progress.errors.load(Ordering::Relaxed)) as f64;
            figures.insert(
                "D.unkey_calls_per_request".into(),
                calls as f64 / requests.max(1.0),
            );
        }
        if let Some(error) = &measured.first_error {
            eprintln!(
                "bench: {name}: {} errors; the first: {error}",
                measured.errors
            );
        }
    }
    Ok(())
}

/// A mixed load (A, C, D, E in turn) for `seconds` while the service's VmRSS is sampled.
async fn run_soak(options: &Options, service: &Service, seconds: u64) -> Res<Value> {
    let http = Arc::clone(&service.http);
    let interval = Duration::from_secs(options.soak_interval.max(1));
    eprintln!(
        "bench: soak: debits, pairs, verifies and balance reads in turn, {} clients, {seconds} s, VmRSS every {} s",
        options.clients,
        interval.as_secs()
    );
    let progress = Arc::new(Progress::default());
    service.begin_phase();
    let started = Instant::now();
    let load = closed_loop(
        http,
        &[Op::Debit, Op::Pair, Op::Verify, Op::Balance],
        options.clients,
        Duration::ZERO,
        Duration::from_secs(seconds),
        Arc::clone(&progress),
    );
    let sampler = async {
        let mut samples = vec![(0.0, service.rss_mib(), 0.0, 0u64)];
        let (mut last_done, mut last_at) = (0u64, Instant::now());
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        while started.elapsed() < Duration::from_secs(seconds) {
            ticks.tick().await;
            let done = progress.done.load(Ordering::Relaxed);
            let now = Instant::now();
            let per_s = (done - last_done) as f64 / (now - last_at).as_secs_f64();
            (last_done, last_at) = (done, now);
            samples.push((
                started.elapsed().as_secs_f64(),
                service.rss_mib(),
                per_s,
                progress.errors.load(Ordering::Relaxed),
            ));
        }
        samples
    };
    let (measured, samples) = tokio::join!(load, sampler);
    let peak = service.end_phase();
    let rss: Vec<f64> = samples.iter().map(|s| s.1).collect();
    // Least-squares slope of RSS over time, MiB per minute.
    let n = samples.len() as f64;
    let (mean_t, mean_r) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        rss.iter().sum::<f64>() / n,
    );
    let (cov, var) = samples.iter().fold((0.0, 0.0), |(c, v), s| {
        (
            c + (s.0 - mean_t) * (s.1 - mean_r),
            v + (s.0 - mean_t).powi(2),
        )
    });
    let slope = if var > 0.0 { cov / var * 60.0 } else { 0.0 };
    Ok(json!({
        "seconds": seconds,
        "requests_per_s": measured.per_second(),
        "errors": measured.errors,
        "p50_ms": measured.latencies.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": measured.latencies.value_at_quantile(0.99) as f64 / 1000.0,
        "rss_first_mib": rss.first(),
        "rss_last_mib": rss.last(),
        "rss_min_mib": rss.iter().copied().fold(f64::INFINITY, f64::min),
        "rss_max_mib": rss.iter().copied().fold(0.0, f64::max),
        "peak_rss_mib": peak,
        "rss_slope_mib_per_min": slope,
        "samples": samples.iter().map(|s| json!({
            "t_s": s.0, "rss_mib": s.1, "requests_per_s": s.2, "errors": s.3,
        })).collect::<Vec<_>>(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The Unkey double: every `sk_<keyId>` key is VALID at once, every rate limit passes.

struct UnkeyDouble {
    base_url: String,
    calls: Arc<AtomicU64>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Drop for UnkeyDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(serde::Deserialize)]
struct VerifyKey {
    key: String,
}

#[derive(serde::Deserialize)]
struct Ratelimit {
    limit: i64,
    duration: i64,
}

/// Unkey's answer to a wrong root key, or `None` when the root key is ours.
fn refusal(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {UNKEY_ROOT_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"meta": {"requestId": "req_bench"},
                        "error": {"title": "Unauthorized", "detail": "the root key is not valid",
                                  "status": 401, "type": "https://unkey.com/docs/errors"}})),
        )
            .into_response(),
    )
}

impl UnkeyDouble {
    async fn start() -> Res<UnkeyDouble> {
        let calls = Arc::new(AtomicU64::new(0));
        let (verify_calls, limit_calls) = (Arc::clone(&calls), Arc::clone(&calls));
        let app = Router::new()
            .route(
                "/v2/keys.verifyKey",
                post(
                    move |headers: HeaderMap, Json(body): Json<VerifyKey>| async move {
                        verify_calls.fetch_add(1, Ordering::Relaxed);
                        if let Some(refused) = refusal(&headers) {
                            return refused;
                        }
                        let data = match body.key.strip_prefix("sk_") {
                            Some(key_id) => json!({"valid": true, "code": "VALID", "keyId": key_id,
                                               "enabled": true, "meta": {"plan": PLAN},
                                               "permissions": [], "roles": []}),
                            None => json!({"valid": false, "code": "NOT_FOUND"}),
                        };
                        Json(json!({"meta": {"requestId": "req_bench"}, "data": data}))
                            .into_response()
                    },
                ),
            )
            .route(
                "/v2/ratelimit.limit",
                post(
                    move |headers: HeaderMap, Json(body): Json<Ratelimit>| async move {
                        limit_calls.fetch_add(1, Ordering::Relaxed);
                        if let Some(refused) = refusal(&headers) {
                            return refused;
                        }
                        let reset = chrono::Utc::now().timestamp_millis() + body.duration;
                        Json(json!({"meta": {"requestId": "req_bench"},
                                "data": {"limit": body.limit, "remaining": body.limit - 1,
                                         "reset": reset, "success": true}}))
                        .into_response()
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("starting the Unkey double")?;
        let base_url = format!(
            "http://{}",
            listener
                .local_addr()
                .context("the Unkey double's address")?
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(UnkeyDouble {
            base_url,
            calls,
            shutdown,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The machine, and the output.

async fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn about_machine(postgres: &str) -> BTreeMap<&'static str, String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let commit = match command_line("git", &["rev-parse", "--short", "HEAD"]).await {
        Some(hash) => {
            let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
                .await
                .is_some_and(|s| !s.is_empty());
            format!(
                "{hash}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            )
        }
        None => "unknown".into(),
    };
    let mut about = BTreeMap::new();
    about.insert(
        "cpus",
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    );
    about.insert("cpu", cpu);
    about.insert("memory", memory);
    about.insert(
        "kernel",
        read("/proc/sys/kernel/osrelease").trim().to_owned(),
    );
    about.insert("load_at_start", read("/proc/loadavg").trim().to_owned());
    about.insert("postgres", postgres.to_owned());
    about.insert(
        "pgbench",
        command_line("pgbench", &["--version"])
            .await
            .unwrap_or_else(|| "not found".into()),
    );
    about.insert(
        "rustc",
        command_line("rustc", &["--version"])
            .await
            .unwrap_or_else(|| "unknown".into()),
    );
    about.insert("commit", commit);
    about.insert(
        "date",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    about
}

fn print_about(about: &BTreeMap<&'static str, String>, options: &Options) {
    let get = |k: &str| about.get(k).map(String::as_str).unwrap_or("unknown");
    println!("credit-ledger benchmark, {}", get("date"));
    println!(
        "machine:    {} × {}, {}, Linux {}",
        get("cpus"),
        get("cpu"),
        get("memory"),
        get("kernel")
    );
    println!("load:       {} (at start)", get("load_at_start"));
    println!("postgres:   {}", get("postgres"));
    println!("pgbench:    {}", get("pgbench"));
    println!("rustc:      {}", get("rustc"));
    println!("commit:     {}", get("commit"));
    println!(
        "setup:      {} clients, {} accounts, {} s per workload after {} s of warm-up, {} run(s)",
        options.clients, options.accounts, options.seconds, options.warmup, options.runs
    );
}

struct Target {
    name: &'static str,
    value: Option<f64>,
    at_least: bool,
    bound: f64,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_least {
                v >= self.bound
            } else {
                v <= self.bound
            }
        })
    }
}

fn targets(figures: &Figures) -> Vec<Target> {
    let t = |name, key: &str, at_least, bound| Target {
        name,
        value: figures.get(key).copied(),
        at_least,
        bound,
    };
    vec![
        t("A ≥ 0.5 × PostgreSQL uniform", "ratio.A/pg", true, 0.5),
        t("B ≥ 2.0 × PostgreSQL one row", "ratio.B/pg1", true, 2.0),
        t(
            "fixed rate: p99 ≤ 4 × p50",
            "ratio.fixed.p99/p50",
            false,
            4.0,
        ),
        t("C pairs/s ≥ 0.4 × A", "ratio.C/A", true, 0.4),
        t("D ≥ 0.5 × A", "ratio.D/A", true, 0.5),
        t("E ≥ 2 × A", "ratio.E/A", true, 2.0),
        t("peak RSS < 100 MiB", "service.peak_rss_mib", false, 100.0),
    ]
}

fn print_figures(figures: &Figures, options: &Options) {
    let f = |k: &str| figures.get(k).copied();
    let num = |v: Option<f64>, decimals: usize| match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    };
    println!(
        "{:<34} {:>9} {:>12} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9}",
        "workload", "per s", "vs PG", "vs A", "p50 ms", "p99 ms", "p99.9 ms", "errors", "peak RSS"
    );
    let row = |label: String, name: &str, per_s: Option<f64>, vs_pg: String, vs_a: Option<f64>| {
        println!(
            "{:<34} {:>9} {:>12} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9}",
            label,
            num(per_s, 0),
            vs_pg,
            num(vs_a, 2),
            num(f(&format!("{name}.p50_ms")), 2),
            num(f(&format!("{name}.p99_ms")), 2),
            num(f(&format!("{name}.p999_ms")), 2),
            num(f(&format!("{name}.errors")), 0),
            f(&format!("{name}.peak_rss_mib")).map_or("-".into(), |m| format!("{m:.1} MiB")),
        );
    };
    let rows = options.accounts;
    if f("pg.uniform.tps").is_some() {
        row(
            format!("PG limit, uniform over {rows} rows"),
            "pg.uniform",
            f("pg.uniform.tps"),
            "1.00 PG".into(),
            None,
        );
        row(
            "PG limit, one row".into(),
            "pg.one_row",
            f("pg.one_row.tps"),
            "1.00 PG1".into(),
            None,
        );
    }
    let vs = |key: &str, of: &str| f(key).map_or("-".into(), |r| format!("{r:.2} {of}"));
    let workloads = [
        ("A uniform debits", "A", vs("ratio.A/pg", "PG"), None),
        (
            "B hot-key debits",
            "B",
            vs("ratio.B/pg1", "PG1"),
            f("ratio.B/A"),
        ),
        (
            "C reserve+commit pairs",
            "C",
            vs("ratio.C/pg", "PG"),
            f("ratio.C/A"),
        ),
        ("D /v1/verify", "D", vs("ratio.D/pg", "PG"), f("ratio.D/A")),
        (
            "E balance reads",
            "E",
            vs("ratio.E/pg", "PG"),
            f("ratio.E/A"),
        ),
    ];
    for (label, name, vs_pg, vs_a) in workloads {
        if f(&format!("{name}.per_s")).is_some() {
            let vs_a = if name == "A" { Some(1.0) } else { vs_a };
            row(label.into(), name, f(&format!("{name}.per_s")), vs_pg, vs_a);
        }
    }
    if let Some(rate) = f("fixed.rate") {
        row(
            format!("fixed rate {rate:.0}/s, uniform debits"),
            "fixed",
            f("fixed.per_s"),
            "-".into(),
            None,
        );
        println!(
            "fixed rate: p99/p50 = {}, the generator's own lateness p99 = {} ms (included in the latencies)",
            num(f("ratio.fixed.p99/p50"), 2),
            num(f("fixed.lag_p99_ms"), 2)
        );
    }
    if let Some(calls) = f("D.unkey_calls_per_request") {
        println!("D: {calls:.2} calls to the Unkey double per /v1/verify");
    }
    if let Some(peak) = f("service.peak_rss_mib") {
        println!("service peak resident memory (VmHWM): {peak:.1} MiB");
    }
    println!("targets:");
    for target in targets(figures) {
        let verdict = match target.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!(
            "  {:<34} {:>8}  {verdict}",
            target.name,
            num(target.value, 2)
        );
    }
}

fn print_soak(soak: &Value) {
    println!();
    println!(
        "soak: {} s of mixed load, {:.0} requests/s, {} errors, p50 {:.2} ms, p99 {:.2} ms",
        soak["seconds"],
        soak["requests_per_s"].as_f64().unwrap_or(0.0),
        soak["errors"],
        soak["p50_ms"].as_f64().unwrap_or(0.0),
        soak["p99_ms"].as_f64().unwrap_or(0.0),
    );
    println!(
        "{:>8} {:>10} {:>12} {:>7}",
        "t s", "VmRSS MiB", "requests/s", "errors"
    );
    for sample in soak["samples"].as_array().into_iter().flatten() {
        println!(
            "{:>8.0} {:>10.1} {:>12.0} {:>7}",
            sample["t_s"].as_f64().unwrap_or(0.0),
            sample["rss_mib"].as_f64().unwrap_or(0.0),
            sample["requests_per_s"].as_f64().unwrap_or(0.0),
            sample["errors"],
        );
    }
    println!(
        "soak RSS: first {:.1} MiB, min {:.1}, max {:.1}, last {:.1}, peak (VmHWM) {:.1}; slope {:+.3} MiB/min",
        soak["rss_first_mib"].as_f64().unwrap_or(0.0),
        soak["rss_min_mib"].as_f64().unwrap_or(0.0),
        soak["rss_max_mib"].as_f64().unwrap_or(0.0),
        soak["rss_last_mib"].as_f64().unwrap_or(0.0),
        soak["peak_rss_mib"].as_f64().unwrap_or(0.0),
        soak["rss_slope_mib_per_min"].as_f64().unwrap_or(0.0),
    );
}
