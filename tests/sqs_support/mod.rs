//! SQS test helpers shared by the SQS test binaries: the mapping YAML, queue depth, batch sends,
//! event bodies, and a function whose invocations wait until the test releases them.
#![allow(dead_code)]

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub fn mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!("  - Name: {name}\n    EventSourceArn: {arn}\n    Http: {{ Url: '{url}' }}\n{extra}")
}

/// Messages in the queue, visible or in flight.
pub async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes()
        .unwrap()
        .values()
        .map(|v| v.parse::<usize>().unwrap())
        .sum()
}

/// Sends `bodies` with SendMessageBatch (10 per call); FIFO messages get a group and dedup id.
pub async fn send(client: &aws_sdk_sqs::Client, url: &str, bodies: &[(String, Option<String>)]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (body, group))| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                if let Some(g) = group {
                    e = e.message_group_id(g).message_deduplication_id(body);
                }
                e.build().unwrap()
            })
            .collect::<Vec<_>>();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

/// A function run by the test whose invocations wait while their first message's body starts
/// with a held prefix; records every event it receives when it receives it.
#[derive(Clone)]
pub struct GatedFunction {
    pub url: String,
    /// Every event's records, at arrival.
    pub received: Arc<Mutex<Vec<Vec<Value>>>>,
    held: Arc<tokio::sync::watch::Sender<Vec<String>>>,
}

impl GatedFunction {
    pub async fn start(held: &[&str]) -> GatedFunction {
        use axum::extract::State;
        type St = (
            Arc<Mutex<Vec<Vec<Value>>>>,
            Arc<tokio::sync::watch::Sender<Vec<String>>>,
        );
        async fn handle(State((received, held)): State<St>, body: axum::body::Bytes) -> String {
            let records: Vec<Value> = serde_json::from_slice::<Value>(&body).unwrap()["Records"]
                .as_array()
                .unwrap()
                .clone();
            let first = records[0]["body"].as_str().unwrap().to_string();
            received.lock().unwrap().push(records);
            let mut rx = held.subscribe();
            let _ = rx
                .wait_for(|h| !h.iter().any(|p| first.starts_with(p.as_str())))
                .await;
            "{}".into()
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(tokio::sync::watch::Sender::new(
            held.iter().map(|s| s.to_string()).collect(),
        ));
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state((received.clone(), held.clone()));
        let url = format!("{}/", crate::common::serve(app).await);
        GatedFunction {
            url,
            received,
            held,
        }
    }

    pub fn release_all(&self) {
        self.held.send_replace(Vec::new());
    }

    pub fn bodies(&self) -> Vec<String> {
        let entries = self.received.lock().unwrap().concat();
        bodies(&entries)
    }
}

pub fn bodies(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_string())
        .collect()
}
