//! The real binary, as operators run it: the README's first command with no
//! configuration at all, and `helpline sim` as a separate OpenAI.

use std::{path::Path, time::Duration};

use tokio::process::Child;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message as WsMessage};

use crate::helpers::{run_binary as run, terminate, ChatSocket, Visitor};
use futures::StreamExt;

/// Starts `helpline` with an empty environment but PATH and the data
/// directory, and reads its start-up report.
async fn start(data_dir: &Path) -> (Child, Vec<String>, String) {
    let env = [
        ("HELPLINE_DATA_DIR", data_dir.display().to_string()),
        ("HELPLINE_BIND", "127.0.0.1:0".to_owned()),
        ("HELPLINE_DEMO_REPLY_DELAY_MS", "10".to_owned()),
    ];
    let (child, report) = run(&[], &env, "webhook URL").await;
    let base_url = report[0]
        .strip_prefix("Helpline is running at ")
        .unwrap_or_else(|| panic!("first line names the URL: {report:?}"))
        .trim_end_matches('/')
        .to_owned();
    (child, report, base_url)
}

#[tokio::test]
async fn with_no_configuration_helpline_runs_in_demo_mode_and_keeps_its_data_across_restarts() {
    let data_dir =
        std::env::temp_dir().join(format!("helpline-demo-{}", uuid::Uuid::new_v4().simple()));
    let (mut child, report, base_url) = start(&data_dir).await;

    let text = report.join("\n");
    assert!(
        text.contains(&format!(
            "private PostgreSQL in {}",
            data_dir.join("pgdata").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "demo mode: replies come from the built-in simulator; set OPENAI_API_KEY to use OpenAI"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("webhook URL: {base_url}/api/webhooks/openai")),
        "{text}"
    );

    // The private cluster trusts whoever reaches it, so nobody else may: no
    // TCP listener, and a socket in a directory only its user can enter.
    let pid_file = std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid")).unwrap();
    let port: u16 = pid_file.lines().nth(3).unwrap().trim().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the private cluster listens on no TCP port"
    );
    let socket_dir = std::fs::metadata(data_dir.join("socket")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(socket_dir.permissions().mode() & 0o777, 0o700);
    assert!(data_dir.join(format!("socket/.s.PGSQL.{port}")).exists());

    let http = reqwest::Client::new();
    let page = http.get(format!("{base_url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>"));

    let ws_url = format!("{}/api/chat/ws", base_url.replace("http://", "ws://"));
    let visitor = Visitor::create(&http, &base_url).await;
    let mut socket = ChatSocket::connect(&ws_url, &visitor, None).await;
    socket
        .send_message("demo-1", "How long does delivery take?")
        .await;
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"].as_str().unwrap().starts_with("Orders ship"),
        "{reply}"
    );

    // SIGTERM: sockets are told the server is going away, the process exits cleanly.
    terminate(&child);
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(15), socket.ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(WsMessage::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !data_dir.join("pgdata/postmaster.pid").exists(),
        "the private cluster was stopped"
    );

    // Started again: same data directory, same conversation.
    let (mut child, _, base_url) = start(&data_dir).await;
    let ws_url = format!("{}/api/chat/ws", base_url.replace("http://", "ws://"));
    let mut socket = ChatSocket::connect(&ws_url, &visitor, None).await;
    assert_eq!(socket.welcome["last_seq"], 2);
    let history = socket.frames_until(|f| f["type"] == "status").await;
    assert_eq!(history.iter().filter(|f| f["type"] == "message").count(), 2);
    terminate(&child);
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn helpline_talks_to_any_server_speaking_the_openai_api_such_as_helpline_sim() {
    let app_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let webhook_url = format!("http://127.0.0.1:{app_port}/api/webhooks/openai");
    let sim_args = [
        "sim",
        "--bind",
        "127.0.0.1:0",
        "--webhook-url",
        &webhook_url,
        "--reply-delay-ms",
        "10",
    ];
    let (sim, report) = run(&sim_args, &[], "OPENAI_BASE_URL=").await;
    let secret = report[0].rsplit(' ').next().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{report:?}");
    let base_url = report[1].rsplit('=').next().unwrap().to_owned();

    let data_dir =
        std::env::temp_dir().join(format!("helpline-sim-{}", uuid::Uuid::new_v4().simple()));
    let env = [
        ("HELPLINE_DATA_DIR", data_dir.display().to_string()),
        ("HELPLINE_BIND", format!("127.0.0.1:{app_port}")),
        ("OPENAI_API_KEY", "sk-anything".to_owned()),
        ("OPENAI_WEBHOOK_SECRET", secret),
        ("OPENAI_BASE_URL", base_url),
    ];
    let (app, report) = run(&[], &env, "webhook URL").await;
    let text = report.join("\n");
    assert!(!text.contains("demo mode"), "{text}");
    assert!(text.contains(&webhook_url), "{text}");

    let base = format!("http://127.0.0.1:{app_port}");
    let visitor = Visitor::create(&reqwest::Client::new(), &base).await;
    let ws_url = format!("ws://127.0.0.1:{app_port}/api/chat/ws");
    let mut socket = ChatSocket::connect(&ws_url, &visitor, None).await;
    socket.send_message("sim-1", "I need a refund").await;
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"].as_str().unwrap().contains("30 days"),
        "{reply}"
    );

    terminate(&app);
    terminate(&sim);
    let _ = std::fs::remove_dir_all(&data_dir);
}
