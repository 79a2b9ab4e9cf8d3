//! The benchmark cannot rot: `helpline-bench all --smoke` runs every
//! scenario at tiny sizes and prints each table. No timing is asserted.

use std::{path::Path, process::Command};

#[test]
fn the_benchmark_runs_every_scenario_and_prints_each_table() {
    // The private cluster the other tests use (DATABASE_URL wins when set).
    let mut dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helpline-test-pg");
    if helpline::storage::private_pg::runs_as_other_user()
        && !helpline::storage::private_pg::reachable_by_others(&dir)
    {
        dir = std::env::temp_dir().join("helpline-test-pg");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_helpline-bench"))
        .args(["all", "--smoke", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run helpline-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "helpline-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for title in [
        "### 1. Webhook ingest",
        "### 2. Turn latency",
        "### 2b. Where a turn's database time goes",
        "### 3. Idle sockets",
        "### 4. Fan-out across instances",
        "### 5. Agents watching",
    ] {
        assert!(stdout.contains(title), "no {title:?} table in:\n{stdout}");
    }
    // Scenario 5 measures now: consoles connected and frames counted.
    assert!(
        !stdout.contains("skipped: pending the agent socket"),
        "scenario 5 still skipped:\n{stdout}"
    );
    assert!(
        stdout.contains("item frames"),
        "no agent console counts in:\n{stdout}"
    );
}
