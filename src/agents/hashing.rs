//! Password checks off the async threads, a few at a time. Argon2id is
//! built to cost memory and CPU; run on the request's own thread, a burst
//! of logins would stall every other request on that thread and take that
//! memory per request at once. Here a fixed set of threads verifies, in
//! turn, from a short queue: a burst waits in the queue or is refused.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use super::auth::verify_password;

/// Threads that verify passwords: each holds one Argon2id computation's
/// memory at a time.
pub const HASHERS: usize = 2;
/// Logins waiting for a hasher, at most; more are refused at once.
const QUEUE: usize = 32;

struct Job {
    password: String,
    hash: String,
    answer: oneshot::Sender<bool>,
}

/// The queue was full: too many logins at once.
#[derive(Debug)]
pub struct Busy;

/// Whether `password` matches `hash`, checked on a hasher thread.
pub async fn verify(password: String, hash: String) -> Result<bool, Busy> {
    let (answer, verdict) = oneshot::channel();
    queue()
        .try_send(Job {
            password,
            hash,
            answer,
        })
        .map_err(|_| Busy)?;
    verdict.await.map_err(|_| Busy)
}

fn queue() -> &'static mpsc::SyncSender<Job> {
    static QUEUE_SENDER: OnceLock<mpsc::SyncSender<Job>> = OnceLock::new();
    QUEUE_SENDER.get_or_init(|| {
        let (sender, receiver) = mpsc::sync_channel::<Job>(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..HASHERS {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("helpline-hasher-{i}"))
                .spawn(move || loop {
                    let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { return };
                    let _ = job.answer.send(verify_password(&job.password, &job.hash));
                })
                .expect("a hasher thread starts");
        }
        sender
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::auth::hash_password;

    #[tokio::test]
    async fn a_burst_is_verified_a_few_at_a_time_and_the_rest_refused() {
        let hash = hash_password("right");
        let burst = (0..(QUEUE + HASHERS) * 3).map(|i| {
            let password = if i % 2 == 0 { "right" } else { "wrong" };
            verify(password.to_owned(), hash.clone())
        });
        let results = futures::future::join_all(burst).await;
        let refused = results.iter().filter(|r| r.is_err()).count();
        assert!(refused > 0, "a burst beyond the queue is refused");
        for (i, result) in results.iter().enumerate() {
            if let Ok(matched) = result {
                assert_eq!(*matched, i % 2 == 0);
            }
        }
        assert!(matches!(verify("right".into(), hash).await, Ok(true)));
    }
}
