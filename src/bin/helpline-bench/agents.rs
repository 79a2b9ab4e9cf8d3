//! Scenario 5, agents watching: pending the agent socket.
//!
//! The agent console's live socket is being built on another branch; until
//! it is here there is nothing to subscribe with, so this scenario prints
//! that it is skipped rather than a number it did not measure.

use crate::{harness::Table, Bench};

pub async fn run(_bench: &Bench) -> anyhow::Result<()> {
    let mut table = Table::new(
        "5. Agents watching (50 consoles subscribed to everything, during scenario 2)",
        &["measure", "result"],
    );
    table.row(vec![
        "extra turn latency".into(),
        "skipped: pending the agent socket".into(),
    ]);
    table.note("The agent WebSocket is not on this branch yet; no figure is reported until it can be measured.");
    table.print();
    Ok(())
}
