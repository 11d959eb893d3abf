//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (every enabled mapping has its shards running, none is down, not draining), `/status` (per-shard
//! JSON) and, when the process was started with `--admin-write`, `POST /checkpoints/<mapping>`:
//! a checkpoint move made by the running instance (see [`crate::cli::checkpoints::live`]). That
//! is the one route that changes state; without `--admin-write` it answers 403.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::cli::checkpoints::live::{http_status, ErrorBody, LiveMove, MoveRequest, MoveSender};
use crate::cli::checkpoints::moves::Failed;
use crate::cli::{EXIT_FAILED, EXIT_USAGE};
use crate::telemetry::{Metrics, Status};

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    /// The task owning the running mappings, for checkpoint moves; `None`: admin writes are off.
    pub moves: Option<MoveSender>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/checkpoints/{mapping}", post(move_checkpoints))
        .with_state(state)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.status.not_ready_because() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.status.snapshot())
}

fn refused(status: u16, error: String, exit: u8) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
    (code, Json(ErrorBody { error, exit })).into_response()
}

/// `POST /checkpoints/<mapping>`: a JSON [`MoveRequest`] (`Content-Type: application/json`, so a
/// browser's cross-site form cannot send one), handed to the mappings' task; answers the report.
async fn move_checkpoints(
    State(s): State<AdminState>,
    Path(mapping): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(moves) = s.moves else {
        return refused(
            403,
            "admin writes are off: start sluice with --admin-write (SLUICE_ADMIN_WRITE=true) to move checkpoints through the running instance, or stop the mapping and run the command without --url".into(),
            EXIT_FAILED,
        );
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return refused(
            415,
            "a checkpoint move is a JSON body: send Content-Type: application/json".into(),
            EXIT_USAGE,
        );
    }
    let how = match MoveRequest::parse(&body).and_then(|r| r.to_move()) {
        Ok(how) => how,
        Err(f) => return refused(http_status(&f), f.0, f.1),
    };
    let (reply, answer) = oneshot::channel();
    let gone = || {
        refused(
            503,
            "sluice is shutting down: the move was not made".into(),
            EXIT_FAILED,
        )
    };
    if moves
        .send(LiveMove {
            mapping,
            how,
            reply,
        })
        .await
        .is_err()
    {
        return gone();
    }
    match answer.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(f @ Failed(..))) => refused(http_status(&f), f.0, f.1),
        Err(_) => gone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::checkpoints::moves::Report;

    fn state(moves: Option<MoveSender>) -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(Status::new(0)),
            moves,
        }
    }

    /// Serves `app` on a loopback port and posts `body` to `path`.
    async fn post(app: Router, path: &str, ctype: &str, body: &str) -> (u16, serde_json::Value) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        server.abort();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    #[tokio::test]
    async fn writes_are_off_by_default() {
        let (code, body) = post(
            router(state(None)),
            "/checkpoints/m",
            "application/json",
            r#"{"to":"latest"}"#,
        )
        .await;
        assert_eq!(code, 403);
        assert!(body["error"].as_str().unwrap().contains("--admin-write"));
        assert_eq!(body["exit"], 1);
    }

    #[tokio::test]
    async fn a_move_goes_to_the_mappings_task_and_its_answer_comes_back() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<LiveMove>(1);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let answer = if m.mapping == "orders" {
                    Ok(Report {
                        mapping: m.mapping.clone(),
                        store: "lease table t".into(),
                        dry_run: m.how.dry_run,
                        first_start: None,
                        changes: Vec::new(),
                        instance: None,
                    })
                } else {
                    Err(Failed(
                        format!("no mapping named {:?}", m.mapping),
                        EXIT_USAGE,
                    ))
                };
                let _ = m.reply.send(answer);
            }
        });
        let app = router(state(Some(tx)));
        let (code, body) = post(
            app.clone(),
            "/checkpoints/orders",
            "application/json",
            r#"{"to":"start","dry_run":true}"#,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["mapping"], "orders");
        assert_eq!(body["dry_run"], true);
        let (code, body) = post(
            app.clone(),
            "/checkpoints/nope",
            "application/json",
            r#"{"to":"start"}"#,
        )
        .await;
        assert_eq!((code, body["exit"].as_u64()), (400, Some(2)), "{body}");
        // Refused before it reaches the mappings: a bad body, a form post.
        let (code, body) = post(
            app.clone(),
            "/checkpoints/orders",
            "application/json",
            r#"{"sequence":"1"}"#,
        )
        .await;
        assert_eq!(code, 400);
        assert!(body["error"].as_str().unwrap().contains("--partition"));
        let (code, _) = post(
            app,
            "/checkpoints/orders",
            "application/x-www-form-urlencoded",
            "to=latest",
        )
        .await;
        assert_eq!(code, 415);
    }

    #[tokio::test]
    async fn a_move_after_the_mappings_task_ended_is_a_503() {
        let (tx, rx) = tokio::sync::mpsc::channel::<LiveMove>(1);
        drop(rx);
        let (code, _) = post(
            router(state(Some(tx))),
            "/checkpoints/orders",
            "application/json",
            r#"{"to":"start"}"#,
        )
        .await;
        assert_eq!(code, 503);
    }
}
