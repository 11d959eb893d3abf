//! Seeks of a partition's fetch position, made on the consumer's poll thread. A seek made from
//! another thread races that thread: a record it took from the client just before the seek is
//! pushed into the partition's buffer after the seek cleared it, ahead of the records from the new
//! position (seen in CI: offset 1114 handed out, then 650–698, in one event). So a reader asks
//! ([`Seeks::seek`]) and the poll thread serves the request between two polls ([`Seeks::serve`]):
//! the seek and the buffer's clear then come after every push of a record fetched before the seek,
//! and librdkafka's later polls return nothing fetched before it.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// One partition's seek, and who waits for its outcome.
struct Request {
    partition: i32,
    offset: i64,
    done: oneshot::Sender<Result<(), String>>,
}

/// The seeks waiting for the poll thread.
#[derive(Default)]
pub struct Seeks {
    queue: Mutex<Vec<Request>>,
}

/// How long a seek may keep failing (the partition still being set up after its assignment)
/// before the reader gives up, and how long it waits between tries.
const DEADLINE: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(100);

impl Seeks {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `partition` of `topic` to `offset` and empties its buffer, through the poll thread;
    /// retried while the client refuses (a partition still being set up), for up to 10 s in all.
    pub async fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (done, outcome) = oneshot::channel();
            self.queue().push(Request {
                partition,
                offset,
                done,
            });
            let result = match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the consumer's poll thread stopped".to_string()),
                Err(_) => Err("the consumer's poll thread did not serve it in time".to_string()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + RETRY >= deadline => {
                    return Err(format!("seeking {topic}-{partition} to {offset}: {e}"))
                }
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        }
    }

    /// On the poll thread, between two polls: makes each waiting seek with `seek_and_clear`
    /// (the client's seek, then the partition's buffer emptied) and tells its reader the outcome.
    pub fn serve(&self, mut seek_and_clear: impl FnMut(i32, i64) -> Result<(), String>) {
        let waiting = std::mem::take(&mut *self.queue());
        for r in waiting {
            let _ = r.done.send(seek_and_clear(r.partition, r.offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kafka::buffer::PartitionBuffer;
    use rdkafka::message::{OwnedMessage, Timestamp};
    use rdkafka::Message;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn msg(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; 10]),
            None,
            "t".into(),
            Timestamp::CreateTime(0),
            0,
            offset,
            None,
        )
    }

    /// A client as librdkafka behaves: polls return records from the fetch position on; a seek
    /// moves it, and no poll after the seek returns a record fetched before it.
    struct Client {
        next: Mutex<i64>,
    }

    impl Client {
        fn poll(&self) -> OwnedMessage {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            msg(*next - 1)
        }
        fn seek(&self, offset: i64) {
            *self.next.lock().unwrap() = offset;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_seek_the_buffer_holds_only_records_from_the_new_position() {
        // The poll thread pushes records from 1114 on without pause; the reader seeks back to 650.
        // Whatever the interleaving, what it then takes starts at 650 and runs on in order: no
        // record fetched before the seek comes after it.
        for _ in 0..50 {
            let seeks = Arc::new(Seeks::default());
            let buffer = Arc::new(PartitionBuffer::new(usize::MAX));
            let client = Arc::new(Client {
                next: Mutex::new(1114),
            });
            let stop = Arc::new(AtomicBool::new(false));
            let poller = {
                let (seeks, buffer, client, stop) =
                    (seeks.clone(), buffer.clone(), client.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        seeks.serve(|_, offset| {
                            client.seek(offset);
                            buffer.clear(|| {});
                            Ok(())
                        });
                        let m = client.poll();
                        // A record taken from the client and pushed a moment later.
                        std::thread::yield_now();
                        buffer.push(m, || {});
                    }
                })
            };
            while buffer.is_empty() {
                tokio::task::yield_now().await;
            }
            seeks.seek("t", 0, 650).await.unwrap();
            while buffer.is_empty() {
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::SeqCst);
            poller.join().unwrap();
            let offsets: Vec<i64> = buffer
                .take(usize::MAX, || {})
                .iter()
                .map(|m| m.offset())
                .collect();
            let expected: Vec<i64> = (650..650 + offsets.len() as i64).collect();
            assert_eq!(offsets, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_seek_nobody_serves_fails_after_the_deadline() {
        let seeks = Seeks::default();
        let err = seeks.seek("t", 3, 7).await.unwrap_err();
        assert!(err.starts_with("seeking t-3 to 7: "), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_seek_is_retried_until_it_is_made() {
        let seeks = Arc::new(Seeks::default());
        let tries = Arc::new(Mutex::new(0));
        let server = {
            let (seeks, tries) = (seeks.clone(), tries.clone());
            tokio::spawn(async move {
                loop {
                    seeks.serve(|_, _| {
                        let mut n = tries.lock().unwrap();
                        *n += 1;
                        if *n < 3 {
                            Err("Local: Erroneous state".into())
                        } else {
                            Ok(())
                        }
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        seeks.seek("t", 0, 5).await.unwrap();
        assert_eq!(*tries.lock().unwrap(), 3);
        server.abort();
    }
}
