//! Delivering `response.*` events the way OpenAI does: Standard Webhooks
//! signatures, a fresh timestamp per attempt, retries on failure, and the
//! faults `Behaviour` asks for (drops, duplicates, second ids, reordering).

use std::time::Duration;

use serde_json::json;

use super::{now, random_hex, Simulator};

impl Simulator {
    pub(super) async fn send_webhook(&self, event_type: &str, response_id: &str) {
        let (url, behaviour) = {
            let state = self.lock();
            (state.webhook_url.clone(), state.behaviour.clone())
        };
        let Some(url) = url else {
            tracing::debug!(
                event_type,
                response_id,
                "no webhook URL configured; event not sent"
            );
            return;
        };
        if rand::random::<f64>() < behaviour.webhook_drop_rate {
            tracing::info!(event_type, response_id, "fault: webhook dropped");
            return;
        }
        let event = Delivery::new(event_type, response_id);
        let mut deliveries = vec![event.clone()];
        if rand::random::<f64>() < behaviour.webhook_duplicate_rate {
            deliveries.push(event.clone());
        }
        if rand::random::<f64>() < behaviour.webhook_second_id_rate {
            deliveries.push(Delivery::new(event_type, response_id));
        }
        for delivery in deliveries {
            let sim = self.clone();
            let url = url.clone();
            let jitter = rand::random_range(0..=behaviour.webhook_jitter_ms);
            let attempts = behaviour.webhook_attempts.max(1);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                sim.deliver(&url, &delivery, attempts).await;
            });
        }
    }

    /// POSTs one event until it is accepted or the attempts run out.
    async fn deliver(&self, url: &str, delivery: &Delivery, attempts: u32) {
        for attempt in 1..=attempts {
            let timestamp = now().to_string();
            let signature =
                self.inner
                    .secret
                    .sign(&delivery.webhook_id, &timestamp, delivery.body.as_bytes());
            let sent = self
                .inner
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &delivery.webhook_id)
                .header("webhook-timestamp", &timestamp)
                .header("webhook-signature", signature)
                .body(delivery.body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(status = %r.status(), attempt, "webhook refused"),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook delivery failed"),
            }
            tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(10)))).await;
        }
    }
}

/// One event: its `webhook-id` stays the same across retries.
#[derive(Clone)]
struct Delivery {
    webhook_id: String,
    body: String,
}

impl Delivery {
    fn new(event_type: &str, response_id: &str) -> Self {
        let body = json!({
            "id": format!("evt_{}", random_hex(16)),
            "object": "event",
            "created_at": now(),
            "type": event_type,
            "data": { "id": response_id },
        });
        Self {
            webhook_id: format!("wh_{}", random_hex(16)),
            body: body.to_string(),
        }
    }
}
