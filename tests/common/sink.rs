//! An HTTP function run by the test: records every request (run header, raw body, parsed records)
//! and answers as the test's `respond` closure says.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Written;

#[derive(Debug, Clone)]
pub struct Request {
    /// The `X-Run` header sluice was configured to send.
    pub run: String,
    pub body: Bytes,
    pub records: Vec<Written>,
    /// Its place in arrival order among every request the function received (0, 1, …).
    pub arrival: usize,
    /// When it reached the function.
    pub arrived_at: Instant,
    /// When the function answered it; `None` while it has not.
    pub answered_at: Option<Instant>,
}

impl Request {
    pub fn shard(&self) -> &str {
        self.records.first().map(|r| r.shard.as_str()).unwrap_or("")
    }
}

/// What the function answers: status, extra headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);
type Respond = dyn Fn(&Request, &[Request]) -> Reply + Send + Sync;

#[derive(Clone)]
pub struct Sink {
    pub url: String,
    /// Requests answered 2xx without a function error, in arrival order.
    pub accepted: Arc<Mutex<Vec<Request>>>,
    /// Every request, in arrival order, once answered.
    pub all: Arc<Mutex<Vec<Request>>>,
    /// Requests received, answered or not (a slow function's are counted before it answers).
    pub arrived: Arc<std::sync::atomic::AtomicUsize>,
    /// Every request as it arrived (indexed by [`Request::arrival`]), its `answered_at` filled in
    /// once answered: what each sender was sent and when, even if it died before the answer.
    pub received: Arc<Mutex<Vec<Request>>>,
}

struct SinkState {
    accepted: Arc<Mutex<Vec<Request>>>,
    all: Arc<Mutex<Vec<Request>>>,
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<Mutex<Vec<Request>>>,
    respond: Box<Respond>,
    /// How long the function takes before it answers.
    delay: std::time::Duration,
}

/// The Kinesis records of an event (none for other sources: tests read those from `body`).
pub fn parse_records(body: &[u8]) -> Vec<Written> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("sluice sent JSON");
    // Kafka events have no `Records` (tests read them from `body`).
    let Some(records) = v["Records"].as_array() else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|r| r.get("kinesis").is_some())
        .map(|r| {
            let id = r["eventID"].as_str().unwrap();
            let k = &r["kinesis"];
            let data = base64::engine::general_purpose::STANDARD
                .decode(k["data"].as_str().unwrap())
                .unwrap();
            Written {
                shard: id.split(':').next().unwrap().to_string(),
                seq: k["sequenceNumber"].as_str().unwrap().to_string(),
                key: k["partitionKey"].as_str().unwrap().to_string(),
                data: String::from_utf8(data).unwrap(),
            }
        })
        .collect()
}

impl Sink {
    /// A function that succeeds for every batch.
    pub async fn ok() -> Sink {
        Sink::start(|_, _| (200, vec![], "{}".into())).await
    }

    /// `respond(request, accepted so far)` decides each answer.
    pub async fn start(
        respond: impl Fn(&Request, &[Request]) -> Reply + Send + Sync + 'static,
    ) -> Sink {
        Sink::start_slow(std::time::Duration::ZERO, respond).await
    }

    /// Like [`Sink::start`], for a function that takes `delay` to answer.
    pub async fn start_slow(
        delay: std::time::Duration,
        respond: impl Fn(&Request, &[Request]) -> Reply + Send + Sync + 'static,
    ) -> Sink {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let all = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(SinkState {
            accepted: accepted.clone(),
            all: all.clone(),
            arrived: arrived.clone(),
            received: received.clone(),
            respond: Box::new(respond),
            delay,
        });
        let app = Router::new().route("/", post(handle)).with_state(state);
        let url = format!("{}/", super::serve(app).await);
        Sink {
            url,
            accepted,
            all,
            arrived,
            received,
        }
    }

    pub fn delivered(&self) -> Vec<Written> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.records.clone())
            .collect()
    }

    /// The event entries (`Records[]`) of every accepted request, in arrival order.
    pub fn accepted_entries(&self) -> Vec<serde_json::Value> {
        entries(&self.accepted.lock().unwrap())
    }

    /// The event entries of every request, accepted or not, in arrival order.
    pub fn all_entries(&self) -> Vec<serde_json::Value> {
        entries(&self.all.lock().unwrap())
    }

    pub fn delivered_in_run(&self, run: &str) -> Vec<Written> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.run == run)
            .flat_map(|r| r.records.clone())
            .collect()
    }
}

fn entries(requests: &[Request]) -> Vec<serde_json::Value> {
    requests
        .iter()
        .flat_map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["Records"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

async fn handle(
    State(s): State<Arc<SinkState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let arrived_at = Instant::now();
    let mut req = Request {
        run: headers
            .get("x-run")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        records: parse_records(&body),
        body,
        arrival: 0,
        arrived_at,
        answered_at: None,
    };
    {
        let mut received = s.received.lock().unwrap();
        req.arrival = received.len();
        received.push(req.clone());
    }
    s.arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let (status, extra, reply) = {
        let accepted = s.accepted.lock().unwrap();
        (s.respond)(&req, &accepted)
    };
    let answered_at = Instant::now();
    req.answered_at = Some(answered_at);
    s.received.lock().unwrap()[req.arrival].answered_at = Some(answered_at);
    s.all.lock().unwrap().push(req.clone());
    let function_error = extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-amz-function-error"));
    if (200..300).contains(&status) && !function_error {
        s.accepted.lock().unwrap().push(req);
    }
    let mut h = HeaderMap::new();
    for (k, v) in extra {
        h.insert(k, v.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h, reply)
}
