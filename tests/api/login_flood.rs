//! The agents' sign-in under attack: a flood of logins cannot take the
//! server down or get past the throttle, and a guesser cannot lock a real
//! agent out from elsewhere. Clients on other loopback addresses
//! (127.0.0.2, …) stand for other machines.

use std::net::{IpAddr, Ipv4Addr};

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{run_binary, spawn_app, terminate, TestApp};

const PASSWORD: &str = "a long enough password";

fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .unwrap()
}

async fn login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> u16 {
    http.post(format!("{base}/api/agent/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn add_agent(app: &TestApp, email: &str) {
    helpline::admin::add_agent(&app.pool, email, "Agent", Some(PASSWORD.into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_burst_of_logins_from_one_address_gets_no_more_tries_than_the_limit() {
    let app = spawn_app().await;
    let http = client_from(1);
    let emails: Vec<String> = (0..80).map(|i| format!("x{i}@example.com")).collect();
    let burst = emails
        .iter()
        .map(|email| login(&http, &app.base_url, email, "guess"));
    let statuses = join_all(burst).await;
    let tried = statuses.iter().filter(|&&s| s == 401).count();
    assert!(tried <= 30, "{tried} logins were checked: {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM login_failures").await,
        tried as i64,
        "every checked attempt is counted"
    );
}

#[tokio::test]
async fn wrong_passwords_from_one_address_do_not_lock_the_agent_out_from_another() {
    let app = spawn_app().await;
    add_agent(&app, "dana@example.com").await;
    let guesser = client_from(2);
    for _ in 0..5 {
        assert_eq!(
            login(&guesser, &app.base_url, "dana@example.com", "guess").await,
            401
        );
    }
    assert_eq!(
        login(&guesser, &app.base_url, "dana@example.com", PASSWORD).await,
        429,
        "the guesser's address waits, even with the right password"
    );
    let dana = client_from(3);
    assert_eq!(
        login(&dana, &app.base_url, "dana@example.com", PASSWORD).await,
        200
    );
}

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_login_flood_from_many_addresses_leaves_memory_bounded_and_the_server_answering() {
    let app = spawn_app().await;
    app.stop(); // only the process below serves this database
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = app.env(&[("HELPLINE_BIND", format!("127.0.0.1:{port}"))]);
    let (process, _) = run_binary(&[], &env, "webhook URL").await;
    let pid = process.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // One login first, so that what a single check costs is in the baseline.
    assert_eq!(
        login(&client_from(1), &base, "warm@example.com", "guess").await,
        401
    );
    let before = peak_memory(pid);

    let flood = (2..=251u8).map(|octet| {
        let base = base.clone();
        async move { login(&client_from(octet), &base, "victim@example.com", "guess").await }
    });
    let health = async {
        let http = reqwest::Client::new();
        let mut answered = Vec::new();
        for _ in 0..5 {
            let status = http
                .get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status();
            answered.push(status.as_u16());
        }
        answered
    };
    let (statuses, health) = tokio::join!(join_all(flood), health);
    assert_eq!(health, [200; 5]);
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 429),
        "{statuses:?}"
    );
    let grown = peak_memory(pid).saturating_sub(before);
    assert!(
        grown < 256 * 1024 * 1024,
        "peak memory grew by {} MiB",
        grown / (1024 * 1024)
    );
    terminate(&process);
}
