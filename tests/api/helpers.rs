//! `spawn_app()`: a Helpline instance on a free port with its own database,
//! talking to its own simulator; and a customer socket client.

use std::{path::Path, sync::OnceLock, time::Duration};

use std::{net::SocketAddr, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use futures::{SinkExt, StreamExt};
use helpline::{
    config::Config,
    simulator::{Behaviour, Simulator},
    startup::Application,
    storage::{
        self,
        private_pg::{self, PrivatePostgres},
    },
    webhooks::signature::WebhookSecret,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message as WsMessage, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The PostgreSQL server every test database lives on: `DATABASE_URL` when
/// set, else a private cluster under target/tmp shared by all test binaries.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let mut dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helpline-test-pg");
            // As root, PostgreSQL runs as another user, who may not be able
            // to enter the checkout (e.g. under /root).
            if private_pg::runs_as_other_user() && !private_pg::reachable_by_others(&dir) {
                dir = std::env::temp_dir().join("helpline-test-pg");
            }
            let pg = PrivatePostgres::ensure_running(&dir).expect("private PostgreSQL for tests");
            pg.url("postgres")
        }
    })
}

/// A fresh, empty database on the test server (or on `server`).
pub async fn new_database(server: Option<&str>) -> String {
    let server = match server {
        Some(s) => s.to_owned(),
        None => server_url().to_owned(),
    };
    let name = format!("helpline_test_{}", Uuid::new_v4().simple());
    storage::ensure_database(&server, &name)
        .await
        .expect("create test database");
    database_url(&server, &name)
}

fn database_url(server: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(server).expect("database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub struct TestOptions {
    /// Whether the simulator delivers webhooks by itself. Without, the test
    /// delivers them (and decides how often, with which ids).
    pub auto_webhooks: bool,
    pub behaviour: Behaviour,
    /// Configuration on top of the test defaults.
    pub env: Vec<(&'static str, String)>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            auto_webhooks: true,
            behaviour: Behaviour {
                reply_delay_ms: 20,
                ..Behaviour::default()
            },
            env: Vec::new(),
        }
    }
}

/// One Helpline instance, its database and the simulator it talks to.
pub struct TestApp {
    pub base_url: String,
    pub ws_url: String,
    pub webhook_url: String,
    pub instance_id: Uuid,
    pub db_url: String,
    pub pool: PgPool,
    pub sim: Simulator,
    pub sim_addr: SocketAddr,
    /// The webhook secret as configured (`whsec_…`).
    pub secret_text: String,
    pub secret: WebhookSecret,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    spawn_app_on(server_url(), options).await
}

/// With more configuration variables (e.g. `HELPLINE_ALLOWED_ORIGINS`).
pub async fn spawn_app_configured(
    mut options: TestOptions,
    env: Vec<(&'static str, String)>,
) -> TestApp {
    options.env.extend(env);
    spawn_app_with(options).await
}

/// Like `spawn_app_with`, on the PostgreSQL server at `server` (a URL to any
/// database there).
pub async fn spawn_app_on(server: &str, options: TestOptions) -> TestApp {
    let quiet = std::env::var_os("TEST_LOG").is_none();
    helpline::telemetry::init(if quiet { "off" } else { "info" });
    let name = format!("helpline_test_{}", Uuid::new_v4().simple());
    storage::ensure_database(server, &name)
        .await
        .expect("create test database");

    let (secret_text, secret) = WebhookSecret::generate();
    let sim = Simulator::new(secret.clone(), None, options.behaviour);
    // The simulator outlives any one instance: tests restart instances.
    let sim_addr = sim
        .clone()
        .spawn(([127, 0, 0, 1], 0).into(), CancellationToken::new())
        .await
        .expect("simulator")
        .addr;
    let app = start_instance(
        &database_url(server, &name),
        sim,
        sim_addr,
        secret_text,
        secret,
        &options.env,
    )
    .await;
    if options.auto_webhooks {
        app.sim.set_webhook_url(&app.webhook_url);
    }
    app
}

impl TestApp {
    /// Another instance on the same database and simulator (the simulator
    /// keeps sending webhooks where it did).
    pub async fn spawn_peer(&self, env: &[(&'static str, String)]) -> TestApp {
        let (secret_text, secret) = (self.secret_text.clone(), self.secret.clone());
        start_instance(
            &self.db_url,
            self.sim.clone(),
            self.sim_addr,
            secret_text,
            secret,
            env,
        )
        .await
    }

    /// The configuration an instance of this test runs with, as environment
    /// variables (for running the real binary against the same database).
    pub fn env(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut env = test_env(&self.db_url, self.sim_addr, &self.secret_text);
        env.extend(extra.iter().cloned());
        env
    }

    /// The simulator's base URL, as `OPENAI_BASE_URL`.
    pub fn sim_base_url(&self) -> String {
        format!("http://{}/v1", self.sim_addr)
    }

    /// Stops this instance (sockets close with 1001), as SIGTERM would.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

fn test_env(db_url: &str, sim_addr: SocketAddr, secret_text: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HELPLINE_BIND", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db_url.to_owned()),
        ("HELPLINE_DB_MAX_CONNECTIONS", "8".to_owned()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("OPENAI_WEBHOOK_SECRET", secret_text.to_owned()),
        ("OPENAI_BASE_URL", format!("http://{sim_addr}/v1")),
        ("HELPLINE_WORKER_POLL_MS", "200".to_owned()),
    ]
}

async fn start_instance(
    db_url: &str,
    sim: Simulator,
    sim_addr: SocketAddr,
    secret_text: String,
    secret: WebhookSecret,
    extra: &[(&'static str, String)],
) -> TestApp {
    let mut vars = test_env(db_url, sim_addr, &secret_text);
    vars.extend(extra.iter().cloned());
    // Later entries win, like a variable set twice.
    let config = Config::from_lookup(|k| {
        // Later entries (the test's own) win.
        vars.iter()
            .rev()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("test configuration");
    let app = Application::build(config).await.expect("build app");
    let addr = app.addr;
    let webhook_url = app.webhook_url.clone();
    let instance_id = app.instance_id;
    let pool = app.pool();
    let shutdown = app.shutdown_token();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    TestApp {
        base_url: format!("http://{addr}"),
        ws_url: format!("ws://{addr}/api/chat/ws"),
        webhook_url,
        instance_id,
        db_url: db_url.to_owned(),
        pool,
        sim,
        sim_addr,
        secret_text,
        secret,
        http: reqwest::Client::new(),
        shutdown,
    }
}

pub struct Visitor {
    pub token: String,
}

impl Visitor {
    /// `POST /api/visitors` on the instance at `base_url`.
    pub async fn create(http: &reqwest::Client, base_url: &str) -> Self {
        let response = http
            .post(format!("{base_url}/api/visitors"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert!(body["visitor_id"].is_string(), "{body}");
        Visitor {
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }
}

impl TestApp {
    pub async fn new_visitor(&self) -> Visitor {
        Visitor::create(&self.http, &self.base_url).await
    }

    /// Opens a socket and says nothing yet.
    pub async fn open_socket(&self) -> ChatSocket {
        ChatSocket::open(&self.ws_url).await
    }

    /// Opens a socket, says hello, and reads the welcome.
    pub async fn connect(&self, visitor: &Visitor, after_seq: Option<i64>) -> ChatSocket {
        ChatSocket::connect(&self.ws_url, visitor, after_seq).await
    }

    /// What a fresh socket of `visitor` replays: (role, text) of every
    /// message, the database's truth as the customer sees it.
    pub async fn customer_view(&self, visitor: &Visitor) -> Vec<(String, String)> {
        let mut socket = self.connect(visitor, None).await;
        let frames = socket.frames_until(|f| f["type"] == "status").await;
        frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| {
                (
                    f["role"].as_str().unwrap().to_owned(),
                    f["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Posts a correctly signed webhook, as OpenAI would.
    pub async fn post_webhook(&self, webhook_id: &str, body: &str) -> reqwest::Response {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = self.secret.sign(webhook_id, &timestamp, body.as_bytes());
        self.http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Delivers a signed `response.completed` for `response_id`, as OpenAI
    /// would (answered 200), and returns the assistant's message that
    /// `socket` receives next.
    pub async fn complete(
        &self,
        webhook_id: &str,
        response_id: &str,
        socket: &mut ChatSocket,
    ) -> Value {
        let body = Self::event_body("response.completed", response_id);
        assert_eq!(self.post_webhook(webhook_id, &body).await.status(), 200);
        socket.next_from("assistant").await
    }

    /// The body of a `response.*` event for `response_id`.
    pub fn event_body(event_type: &str, response_id: &str) -> String {
        json!({
            "id": format!("evt_{}", Uuid::new_v4().simple()),
            "object": "event",
            "created_at": chrono::Utc::now().timestamp(),
            "type": event_type,
            "data": { "id": response_id },
        })
        .to_string()
    }

    /// Requests the simulator received at `path`, with their arrival time in
    /// ms (fetched over HTTP).
    pub async fn sim_requests_timed(&self, method: &str, path: &str) -> Vec<(i64, Value)> {
        let url = format!("http://{}/_sim/requests", self.sim_addr);
        let all: Vec<Value> = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter()
            .filter(|r| r["method"] == method && r["path"] == path)
            .map(|r| (r["at_ms"].as_i64().unwrap(), r["body"].clone()))
            .collect()
    }

    /// Requests the simulator received at `path` (fetched over HTTP).
    pub async fn sim_requests(&self, method: &str, path: &str) -> Vec<Value> {
        let timed = self.sim_requests_timed(method, path).await;
        timed.into_iter().map(|(_, body)| body).collect()
    }

    /// Waits until the simulator has been sent such a request.
    pub async fn wait_for_sim_request(&self, method: &str, path: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.sim_requests(method, path).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {method} {path}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a query that watches the database's state returns true.
    /// For state only the database shows (a worker's verdict on an event).
    pub async fn wait_until(&self, what: &str, sql: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let done: bool = sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap();
            if done {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// An app whose simulator behaves as `behaviour`, and a new visitor's
/// socket.
pub async fn app_behaving(behaviour: Behaviour) -> (TestApp, ChatSocket) {
    let app = spawn_app_with(TestOptions {
        behaviour,
        ..TestOptions::default()
    })
    .await;
    let visitor = app.new_visitor().await;
    let socket = app.connect(&visitor, None).await;
    (app, socket)
}

/// Where a test delivers OpenAI's webhooks itself (deciding when, how
/// often, with which ids): an app whose simulator sends none, the ids of
/// the responses it is asked for, in order, and a visitor with one socket
/// connected.
pub async fn webhooks_by_hand() -> (
    TestApp,
    tokio::sync::broadcast::Receiver<String>,
    Visitor,
    ChatSocket,
) {
    let app = spawn_app_with(TestOptions {
        auto_webhooks: false,
        ..TestOptions::default()
    })
    .await;
    let created = app.sim.watch_created();
    let visitor = app.new_visitor().await;
    let socket = app.connect(&visitor, None).await;
    (app, created, visitor, socket)
}

/// Awaits the next response id the simulator creates.
pub async fn next_created(created: &mut tokio::sync::broadcast::Receiver<String>) -> String {
    tokio::time::timeout(PATIENCE, created.recv())
        .await
        .expect("the simulator was asked for a response in time")
        .expect("created channel open")
}

pub struct ChatSocket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl ChatSocket {
    pub async fn open(ws_url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("websocket connect");
        Self {
            ws,
            welcome: Value::Null,
        }
    }

    pub async fn connect(ws_url: &str, visitor: &Visitor, after_seq: Option<i64>) -> Self {
        let mut socket = Self::open(ws_url).await;
        let mut hello = json!({ "type": "hello", "token": visitor.token });
        if let Some(n) = after_seq {
            hello["after_seq"] = json!(n);
        }
        socket.send(hello).await;
        socket.welcome = socket.next_frame().await;
        assert_eq!(socket.welcome["type"], "welcome", "{}", socket.welcome);
        socket
    }

    /// The conversation its welcome named.
    pub fn conversation_id(&self) -> uuid::Uuid {
        self.welcome["conversation_id"]
            .as_str()
            .expect("welcome names the conversation")
            .parse()
            .expect("a uuid")
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    pub async fn send_message(&mut self, client_id: &str, text: &str) {
        self.send(json!({ "type": "message", "client_id": client_id, "text": text }))
            .await;
    }

    /// The next text frame as JSON; panics if none comes in time.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame arrived in time")
                .expect("socket open")
                .expect("frame readable");
            match message {
                WsMessage::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON frame")
                }
                WsMessage::Close(close) => panic!("socket closed: {close:?}"),
                _ => continue,
            }
        }
    }

    /// Skips frames until one matches.
    pub async fn next_where(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.next_frame().await;
            if matches(&frame) {
                return frame;
            }
            assert_ne!(
                frame["type"], "error",
                "unexpected error frame while waiting for {what}: {frame}"
            );
        }
    }

    pub async fn next_message(&mut self) -> Value {
        self.next_where("a message", |f| f["type"] == "message")
            .await
    }

    pub async fn next_from(&mut self, role: &str) -> Value {
        self.next_where(role, |f| f["type"] == "message" && f["role"] == role)
            .await
    }

    pub async fn next_status(&mut self, assistant: &str) -> Value {
        self.next_where(assistant, |f| {
            f["type"] == "status" && f["assistant"] == assistant
        })
        .await
    }

    /// Frames up to and including the first that matches.
    pub async fn frames_until(&mut self, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame().await;
            let done = matches(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}

/// Runs the binary with only PATH and `env`, and returns its stdout lines up
/// to the first containing `last`.
pub async fn run_binary(args: &[&str], env: &[(&str, String)], last: &str) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helpline"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start helpline");
    let mut lines: Lines<BufReader<ChildStdout>> =
        BufReader::new(child.stdout.take().unwrap()).lines();
    let mut report = Vec::new();
    // initdb on a first start takes a few seconds.
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains(last);
            report.push(line);
            if done {
                return;
            }
        }
        panic!("helpline exited before printing {last:?}");
    };
    tokio::time::timeout(Duration::from_secs(90), read)
        .await
        .expect("start-up report in time");
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, report)
}

pub fn terminate(child: &Child) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// `kill -9`: no goodbye, no draining.
pub fn kill(child: &Child) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Runs a `helpline` command to completion; returns its exit status and output.
pub async fn run_cli(
    args: &[&str],
    env: &[(&str, String)],
) -> (std::process::ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_helpline"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("run helpline");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stdout, stderr)
}

/// The value of the series `name` with (at least) `labels` in a Prometheus
/// text exposition; 0 when the series is absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse().expect("a number"))
        .unwrap_or(0.0)
}
