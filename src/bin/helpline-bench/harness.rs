//! What every scenario needs: the PostgreSQL server, a fresh database per
//! scenario, Helpline instances (in this process or as a child process), the
//! simulator, customer sockets, latency samples and the table they print as.

use std::{
    collections::BTreeMap,
    io::{Seek, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use helpline::{
    chat::token_hash,
    config::Config,
    simulator::{Behaviour, Simulator},
    startup::Application,
    storage::{self, private_pg, private_pg::PrivatePostgres},
    webhooks::signature::WebhookSecret,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message as WsMessage},
    MaybeTlsStream, WebSocketStream,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long the benchmark waits for anything that should happen promptly
/// (a frame, a start-up) before it calls the run a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The PostgreSQL server the scenarios create their databases on.
pub struct Server {
    /// A URL to the server's `postgres` database.
    pub admin_url: String,
    /// Set when the benchmark started the private cluster (and stops it).
    private: Option<PrivatePostgres>,
    /// Where [`Stalls`] probes the disk: the private cluster's directory,
    /// or with `DATABASE_URL` the temporary directory (whose disk may not
    /// be the server's).
    pub probe_dir: PathBuf,
}

impl Server {
    /// `DATABASE_URL` when set, else the private cluster in `data_dir`
    /// (created and started as Helpline does by default).
    pub async fn start(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                return Ok(Self {
                    admin_url: url,
                    private: None,
                    probe_dir: std::env::temp_dir(),
                });
            }
        }
        let dir = data_dir.unwrap_or_else(default_data_dir);
        let probe_dir = dir.clone();
        let pg =
            tokio::task::spawn_blocking(move || PrivatePostgres::ensure_running(&dir)).await??;
        Ok(Self {
            admin_url: pg.url("postgres"),
            private: Some(pg),
            probe_dir,
        })
    }

    /// A fresh, migrated database for one scenario.
    pub async fn new_database(&self, label: &str) -> anyhow::Result<String> {
        let name = format!("helpline_bench_{label}_{}", Uuid::new_v4().simple());
        storage::ensure_database(&self.admin_url, &name).await?;
        let url = with_database(&self.admin_url, &name)?;
        let pool = storage::connect(&url, 2).await?;
        storage::migrate(&pool).await?;
        pool.close().await;
        Ok(url)
    }

    /// Drops a scenario's database, cutting any connection still open.
    pub async fn drop_database(&self, url: &str) {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return;
        };
        let name = parsed.path().trim_start_matches('/').replace('"', "");
        if let Ok(admin) = storage::connect(&self.admin_url, 1).await {
            let dropped = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .execute(&admin)
                .await;
            if let Err(e) = dropped {
                eprintln!("note: could not drop {name}: {e}");
            }
            admin.close().await;
        }
    }

    pub async fn stop(self) {
        if let Some(pg) = self.private {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
}

/// `target/bench-pg` in the checkout, or under the temporary directory when
/// PostgreSQL runs as another user who cannot enter the checkout.
fn default_data_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-pg"));
    if private_pg::runs_as_other_user() && !private_pg::reachable_by_others(&dir) {
        return std::env::temp_dir().join("helpline-bench-pg");
    }
    dir
}

fn with_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(server).context("database URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// The rate limits the benchmark raises to their maximum on its instances.
pub const GENEROUS_LIMITS: [&str; 6] = [
    "HELPLINE_VISITORS_PER_IP_BURST",
    "HELPLINE_VISITORS_PER_IP_PER_MINUTE",
    "HELPLINE_SOCKETS_PER_IP_BURST",
    "HELPLINE_SOCKETS_PER_IP_PER_MINUTE",
    "HELPLINE_MESSAGES_BURST",
    "HELPLINE_MESSAGES_PER_MINUTE",
];

/// The OpenAI simulator, answering at once (zero model latency).
pub struct Sim {
    pub sim: Simulator,
    pub addr: SocketAddr,
    pub secret_text: String,
    pub secret: WebhookSecret,
    stop: CancellationToken,
}

impl Sim {
    pub async fn start() -> anyhow::Result<Self> {
        let (secret_text, secret) = WebhookSecret::generate();
        let behaviour = Behaviour {
            reply_delay_ms: 0,
            ..Behaviour::default()
        };
        let sim = Simulator::new(secret.clone(), None, behaviour);
        let stop = CancellationToken::new();
        let addr = sim
            .clone()
            .spawn(([127, 0, 0, 1], 0).into(), stop.clone())
            .await?
            .addr;
        Ok(Self {
            sim,
            addr,
            secret_text,
            secret,
            stop,
        })
    }

    /// The configuration that points an instance at this simulator, with the
    /// defaults of everything else (pool size, workers, poll interval)
    /// except the abuse limits: every simulated client shares 127.0.0.1, and
    /// the load sends far more than one person would, so the per-IP and
    /// per-visitor buckets are raised out of the way (BENCHMARKS.md).
    pub fn env(&self, db_url: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("HELPLINE_BIND".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), db_url.into()),
            ("OPENAI_API_KEY".into(), "sk-bench".into()),
            ("OPENAI_WEBHOOK_SECRET".into(), self.secret_text.clone()),
            ("OPENAI_BASE_URL".into(), format!("http://{}/v1", self.addr)),
        ];
        for name in GENEROUS_LIMITS {
            env.push((name.into(), "1000000".into()));
        }
        // Settings of the caller's own (`HELPLINE_WORKERS=8`, say) win.
        env.extend(
            std::env::vars()
                .filter(|(name, _)| name.starts_with("HELPLINE_") && name != "HELPLINE_BIND"),
        );
        env
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A Helpline instance running in this process.
pub struct Instance {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub webhook_url: String,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    pub async fn start(env: &[(String, String)]) -> anyhow::Result<Self> {
        let config = Config::from_lookup(|k| {
            env.iter()
                .rev()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
        .map_err(|problems| anyhow::anyhow!("configuration: {}", problems.join("; ")))?;
        let app = Application::build(config).await?;
        let instance = Self {
            addr: app.addr,
            pool: app.pool(),
            webhook_url: app.webhook_url.clone(),
            shutdown: app.shutdown_token(),
            running: tokio::spawn(app.run_until_stopped(std::future::pending())),
        };
        Ok(instance)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/chat/ws", self.addr)
    }

    /// Stops it as SIGTERM would, and waits for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.running).await;
        self.pool.close().await;
    }
}

/// A Helpline instance in a child process (this binary's `serve` mode), so
/// that its memory and CPU can be read apart from the load generator's.
pub struct ChildInstance {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
}

impl ChildInstance {
    pub async fn start(env: &[(String, String)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the benchmark's own path")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            // The child stops when this pipe closes, even if we crash.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the helpline process")?;
        let pid = child.id().context("child pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let addr = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok(addr.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("the helpline process exited before listening")
        })
        .await
        .context("the helpline process did not start in time")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { addr, pid, child })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/chat/ws", self.addr)
    }

    /// Resident memory, in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("VmRSS in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// User + system CPU time consumed so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.pid)
    }

    pub async fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// User + system CPU time of a process (`/proc/PID/stat`, fields 14 and 15).
pub fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it do not.
    let after = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second))
}

/// WAL flushes the server has made so far (`pg_stat_wal.wal_sync`, all
/// of the server's databases; PostgreSQL 14 and later, else 0): each
/// commit that waits for the disk is one, unless it shares another's.
pub async fn wal_flushes(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// CPU time used since it was started by this process (Helpline in
/// process, the simulator and the load's clients) and by PostgreSQL: every
/// process named `postgres` on the machine (the private cluster's server and
/// backends; with `DATABASE_URL`, whatever server runs here).
pub struct CpuMeter {
    own: Duration,
    postgres: std::collections::HashMap<u32, Duration>,
}

impl CpuMeter {
    pub fn start() -> Self {
        Self {
            own: cpu_time_of(std::process::id()).unwrap_or_default(),
            postgres: postgres_cpu(),
        }
    }

    /// (this process, PostgreSQL) since the start. A PostgreSQL process that
    /// ended meanwhile is not counted; pooled backends live throughout.
    pub fn used(&self) -> (Duration, Duration) {
        let own = cpu_time_of(std::process::id())
            .unwrap_or_default()
            .saturating_sub(self.own);
        let postgres = postgres_cpu()
            .into_iter()
            .map(|(pid, now)| {
                now.saturating_sub(self.postgres.get(&pid).copied().unwrap_or_default())
            })
            .sum();
        (own, postgres)
    }
}

fn postgres_cpu() -> std::collections::HashMap<u32, Duration> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| Some((pid, cpu_time_of(pid).ok()?)))
        .collect()
}

/// The `serve` mode: one Helpline instance configured from the environment,
/// printing its address, until SIGTERM or until stdin closes.
pub async fn serve_child() -> anyhow::Result<()> {
    helpline::telemetry::init("warn");
    let config = Config::from_env()
        .map_err(|problems| anyhow::anyhow!("configuration: {}", problems.join("; ")))?;
    let app = Application::build(config).await?;
    println!("listening on {}", app.addr);
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        let parent_gone = async {
            use tokio::io::AsyncReadExt;
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = parent_gone => {}
        }
    };
    app.run_until_stopped(stop).await
}

/// Raises this process's open-file limit as far as allowed (children
/// inherit it). Returns the new soft limit.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let target = wanted as libc::rlim_t;
        if limit.rlim_max < target {
            // Root may raise the hard limit too.
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: target,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return target;
            }
        }
        limit.rlim_cur = limit.rlim_max.min(target.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Creates `n` visitors directly in the database (one statement) and
/// returns their tokens: the scenarios measure sockets, not sign-ups.
pub async fn create_visitors(pool: &PgPool, n: usize) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(n);
    for chunk_start in (0..n).step_by(5000) {
        let count = (n - chunk_start).min(5000);
        let mut ids = Vec::with_capacity(count);
        let mut hashes = Vec::with_capacity(count);
        for _ in 0..count {
            let token = format!("hlv_bench_{}", Uuid::new_v4().simple());
            ids.push(Uuid::now_v7());
            hashes.push(token_hash(&token).to_vec());
            tokens.push(token);
        }
        sqlx::query(
            "INSERT INTO visitors (id, token_hash) SELECT * FROM UNNEST($1::uuid[], $2::bytea[])",
        )
        .bind(&ids)
        .bind(&hashes)
        .execute(pool)
        .await?;
    }
    Ok(tokens)
}

/// A customer socket, as the widget uses it.
pub struct Customer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub conversation_id: String,
}

impl Customer {
    /// Opens a socket, says hello and reads the welcome up to the status.
    pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<Self> {
        // tungstenite zero-fills its whole read buffer (128 KiB by
        // default) on the first read: keep the client's small.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        // `true`: no Nagle delay, as browsers open their sockets.
        let connect = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), true);
        let (ws, _) = tokio::time::timeout(PATIENCE, connect)
            .await
            .context("socket connect timed out")??;
        let mut customer = Self {
            ws,
            conversation_id: String::new(),
        };
        customer
            .send(json!({ "type": "hello", "token": token }))
            .await?;
        let welcome = customer.next_frame().await?;
        if welcome["type"] != "welcome" {
            bail!("expected a welcome, got {welcome}");
        }
        customer.conversation_id = welcome["conversation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        customer.next_where(|f| f["type"] == "status").await?;
        Ok(customer)
    }

    pub async fn send(&mut self, frame: Value) -> anyhow::Result<()> {
        self.ws.send(WsMessage::text(frame.to_string())).await?;
        Ok(())
    }

    pub async fn send_message(&mut self, text: &str) -> anyhow::Result<()> {
        let client_id = Uuid::new_v4().to_string();
        self.send(json!({ "type": "message", "client_id": client_id, "text": text }))
            .await
    }

    pub async fn next_frame(&mut self) -> anyhow::Result<Value> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .context("no frame in time")?
                .context("socket closed")??;
            match message {
                WsMessage::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
                WsMessage::Close(close) => bail!("socket closed: {close:?}"),
                _ => continue,
            }
        }
    }

    pub async fn next_where(&mut self, matches: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            let frame = self.next_frame().await?;
            if frame["type"] == "error" {
                bail!("error frame: {frame}");
            }
            if matches(&frame) {
                return Ok(frame);
            }
        }
    }

    /// Waits for the assistant's next message.
    pub async fn next_assistant(&mut self) -> anyhow::Result<Value> {
        self.next_where(|f| f["type"] == "message" && f["role"] == "assistant")
            .await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Posts a correctly signed webhook, as OpenAI would.
pub async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    webhook_id: &str,
    body: &str,
) -> anyhow::Result<reqwest::StatusCode> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = secret.sign(webhook_id, &timestamp, body.as_bytes());
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await?;
    Ok(response.status())
}

/// The body of a `response.completed` event for `response_id`.
pub fn completed_event(response_id: &str) -> String {
    json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "created_at": chrono::Utc::now().timestamp(),
        "type": "response.completed",
        "data": { "id": response_id },
    })
    .to_string()
}

/// Latency samples of one measurement.
#[derive(Default, Clone)]
pub struct Samples {
    values: Vec<Duration>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.values.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.values.extend(other.values);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The `q` quantile (nearest rank), zero when empty.
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.values.is_empty() {
            return Duration::ZERO;
        }
        self.values.sort_unstable();
        let rank = ((q * self.values.len() as f64).ceil() as usize).clamp(1, self.values.len());
        self.values[rank - 1]
    }

    pub fn p50(&mut self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&mut self) -> Duration {
        self.quantile(0.99)
    }

    pub fn max(&mut self) -> Duration {
        self.quantile(1.0)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `a / b` to two decimals, or "-" when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// One table per scenario: a title, aligned columns, notes under it.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Printed as a Markdown table, so it can be pasted into BENCHMARKS.md.
    pub fn print(&self) {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or("");
                    format!("{cell:>w$}", w = widths[i])
                })
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        println!();
        println!("### {}", self.title);
        println!();
        println!("{}", line(&self.header));
        let rule: Vec<String> = widths
            .iter()
            .map(|w| format!("{}:", "-".repeat(*w)))
            .collect();
        println!("|{}|", rule.join("|"));
        for row in &self.rows {
            println!("{}", line(row));
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
        println!();
    }
}

/// Counts the statements this process sends to PostgreSQL, and the time
/// each kind took, while [`count_statements`] is on: sqlx logs every
/// statement (target `sqlx::query`, DEBUG, with a summary of its SQL and
/// its elapsed time) and a tracing layer adds them up. Pings before a
/// pooled connection is handed out are not logged.
pub static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Whether statements are counted now. Off, sqlx does not log them at all:
/// a logged statement costs CPU (sqlx pretty-prints its SQL for the log),
/// which Helpline, logging at `info`, does not spend in production.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Turns the statement count on or off.
pub fn count_statements(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

static PROFILE: Mutex<BTreeMap<String, (u64, f64)>> = Mutex::new(BTreeMap::new());

/// Forgets the counts so far.
pub fn reset_statements() {
    STATEMENTS.store(0, Ordering::Relaxed);
    PROFILE.lock().expect("profile lock").clear();
}

/// Statements since the last reset: (summary, count, seconds), most
/// frequent first.
pub fn statement_profile() -> Vec<(String, u64, f64)> {
    let profile = PROFILE.lock().expect("profile lock");
    let mut rows: Vec<_> = profile
        .iter()
        .map(|(k, (n, secs))| (k.clone(), *n, *secs))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    rows
}

struct StatementCounter;

#[derive(Default)]
struct StatementFields {
    summary: String,
    elapsed_secs: f64,
}

impl tracing::field::Visit for StatementFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            self.summary = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.summary = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        let summary: String = fields.summary.chars().take(48).collect();
        let mut profile = PROFILE.lock().expect("profile lock");
        let entry = profile.entry(summary).or_default();
        entry.0 += 1;
        entry.1 += fields.elapsed_secs;
    }
}

/// Logs to stderr what `RUST_LOG` names (by default, warnings and errors),
/// and counts statements.
pub fn init_tracing() {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};
    // By default no statement log, and of the workers only errors: the
    // ingest scenario's events name responses that do not exist, and the
    // workers' warnings about them are expected.
    const SHOWN: &str = "warn,sqlx::query=off,helpline::worker=error";
    let counted = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
        meta.target() == "sqlx::query" && COUNTING.load(Ordering::Relaxed)
    });
    let shown = std::env::var("RUST_LOG")
        .ok()
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(SHOWN));
    let _ = tracing_subscriber::registry()
        .with(StatementCounter.with_filter(counted))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(shown),
        )
        .try_init();
}

/// Stalls of the machine while a scenario runs, so that a slow stretch can
/// be told apart from Helpline's own doing. Three watchers, each recording
/// the moments one of its steps took longer than [`Stalls::LATE`]:
/// - the disk: 4 KiB written and `fdatasync`ed every 50 ms in a file beside
///   the private cluster's data (PostgreSQL's commits wait for the same
///   kind of flush);
/// - this process: an OS thread that sleeps 5 ms at a time;
/// - its runtime: a task that does the same on the runtime's workers (late
///   there only: a worker thread was blocked).
pub struct Stalls {
    stop: Arc<AtomicBool>,
    disk: std::thread::JoinHandle<Vec<(f64, Duration)>>,
    thread: std::thread::JoinHandle<Vec<(f64, Duration)>>,
    task: tokio::task::JoinHandle<Vec<(f64, Duration)>>,
}

impl Stalls {
    pub const LATE: Duration = Duration::from_millis(50);
    const TICK: Duration = Duration::from_millis(5);
    const FLUSH_EVERY: Duration = Duration::from_millis(50);

    /// Starts watching; `dir` is where the disk's probe writes.
    pub fn watch(dir: &Path) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, path) = (stop.clone(), dir.join("stall-probe"));
        let disk = std::thread::spawn(move || {
            let mut late = Vec::new();
            let Ok(mut file) = std::fs::File::create(&path) else {
                return late;
            };
            while !flag.load(Ordering::Relaxed) {
                let before = Instant::now();
                let flushed = file
                    .seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| file.write_all(&[b'x'; 4096]))
                    .and_then(|_| file.sync_data());
                let took = before.elapsed();
                if flushed.is_err() {
                    break;
                }
                if took > Self::LATE {
                    late.push(((before - started).as_secs_f64(), took));
                }
                std::thread::sleep(Self::FLUSH_EVERY.saturating_sub(took));
            }
            let _ = std::fs::remove_file(&path);
            late
        });
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut late = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(Self::TICK);
                let slept = before.elapsed();
                if slept > Self::LATE {
                    late.push(((before - started).as_secs_f64(), slept));
                }
            }
            late
        });
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut late = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let before = Instant::now();
                tokio::time::sleep(Self::TICK).await;
                let slept = before.elapsed();
                if slept > Self::LATE {
                    late.push(((before - started).as_secs_f64(), slept));
                }
            }
            late
        });
        Self {
            stop,
            disk,
            thread,
            task,
        }
    }

    /// Stops watching; a table note on what was seen, if anything.
    pub async fn stop(self, label: &str) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task.await.unwrap_or_default();
        let thread = self.thread.join().unwrap_or_default();
        let disk = self.disk.join().unwrap_or_default();
        let seen: Vec<String> = [
            ("disk flushes", disk),
            ("this process", thread),
            ("its runtime", task),
        ]
        .into_iter()
        .filter(|(_, late)| !late.is_empty())
        .map(|(what, late)| {
            let longest = late.iter().map(|(_, d)| *d).max().unwrap_or_default();
            let (first, last) = (late[0].0, late[late.len() - 1].0);
            format!(
                "{what} {} times (longest {} ms, between {first:.2} s and {last:.2} s)",
                late.len(),
                longest.as_millis()
            )
        })
        .collect();
        (!seen.is_empty()).then(|| {
            format!(
                "Stalls over {} ms at {label}: {}.",
                Self::LATE.as_millis(),
                seen.join("; ")
            )
        })
    }
}
