//! The control plane: synthnet's HTTP API, web UI and Prometheus metrics, served by
//! the `synthnet bridge` process itself.
//!
//! It runs on a thread of its own (`synthnet-api`) with a single-threaded tokio runtime
//! and axum; the packet thread never waits on it. It reads counters from the
//! [`Board`](crate::daemon::board::Board) the engine publishes to, and asks for changes
//! through the configuration [`worker`](crate::daemon::worker) — the one apply path —
//! answering only once the engine applied or refused them.
//!
//! - `/api/v1/…`: the spec (get, replace, merge-patch, validate, reset) and its
//!   schedule's progress, stats (also as server-sent events), per-flow counters,
//!   commands into running stages. Errors are `{"error", "status", "field"}`.
//! - [`compat`]: synthetic-network's `/qos` and `/top/*.profile`, so its JS client and
//!   UI keep working.
//! - [`metrics`]: `/metrics` in the OpenMetrics text format.
//! - [`guard`]: what keeps other sites and other hosts out (Host and Origin checks,
//!   JSON-only changes, an optional bearer token, bounded bodies).
//! - `/`: the web UI (`ui/index.html`, embedded).

pub mod compat;
pub mod conn;
pub mod guard;
pub mod metrics;
pub mod views;

use crate::daemon::board::Board;
use crate::daemon::worker::{Answer, Change, Handle};
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_config::Outcome;
use synthnet_core::Direction;

/// The largest request body accepted (a spec is at most 4 MiB on disk; a request is
/// for humans and scripts).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a change may take (compiling a large plugin) before the request gives up
/// waiting; the change itself still completes or fails on its own.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// How the API is reached and who may use it.
pub struct ApiOptions {
    /// Bound already (so a busy port fails before the bridge starts).
    pub listener: std::net::TcpListener,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<String>,
    /// Host names accepted besides IP literals and `localhost`.
    pub hosts: Vec<String>,
}

/// What every handler shares.
pub struct Api {
    pub worker: Handle,
    pub board: Arc<Board>,
    pub started: Instant,
    pub token: Option<String>,
    pub hosts: Vec<String>,
    pub registry: prometheus_client::registry::Registry,
    /// The stats of the last [`HISTORY_S`] seconds, one a second, oldest first: what a
    /// page loaded now starts its charts with.
    pub history: std::sync::Mutex<std::collections::VecDeque<Value>>,
}

/// Seconds of stats the API keeps for `GET /api/v1/stats/history` (the UI's charts).
pub const HISTORY_S: usize = 120;

pub type Shared = Arc<Api>;

/// Bind `addr` for the API, with an error that says what to do when it is taken.
pub fn bind(addr: &str) -> Result<std::net::TcpListener> {
    let sock: SocketAddr = addr.parse().with_context(|| {
        format!("--api: {addr:?} is not an address:port (e.g. 127.0.0.1:8080), nor 'off'")
    })?;
    std::net::TcpListener::bind(sock).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "--api {sock}: the port is already in use (another synthnet bridge?). Give another address with --api ADDR, or turn the API off with --api off"
            )
        } else {
            anyhow::anyhow!("--api {sock}: cannot listen there: {e}")
        }
    })
}

/// Serve the API on its own thread until the process ends, holding at most
/// [`conn::connection_cap`]`(nofile)` connections (`nofile`: the open-file limit).
pub fn spawn(
    opts: ApiOptions,
    worker: Handle,
    board: Arc<Board>,
    nofile: u64,
) -> Result<SocketAddr> {
    let local = opts.listener.local_addr()?;
    let cap = conn::connection_cap(nofile);
    opts.listener.set_nonblocking(true)?;
    if !local.ip().is_loopback() && opts.token.is_none() {
        log::warn!(
            "the API listens on {local}, beyond this machine, without a token: anyone who reaches it can change the network (use --api-token-file)"
        );
    }
    let registry = metrics::registry(board.clone(), worker.clone());
    let api = Arc::new(Api {
        worker,
        board,
        started: Instant::now(),
        token: opts.token,
        hosts: opts.hosts,
        registry,
        history: Default::default(),
    });
    let listener = opts.listener;
    std::thread::Builder::new()
        .name("synthnet-api".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("API: cannot start its runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("API: {e}");
                        return;
                    }
                };
                tokio::spawn(keep_history(api.clone()));
                conn::serve(listener, router(api), cap).await;
            });
        })
        .context("cannot start the API thread")?;
    log::info!(
        "API and web UI on http://{local}/ (at most {cap} connections; open-file limit {nofile})"
    );
    Ok(local)
}

/// Every route, behind the guard.
pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/version", get(version))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve))
        .route(
            "/api/v1/spec",
            get(get_spec).put(put_spec).patch(patch_spec),
        )
        .route("/api/v1/spec/validate", post(validate))
        .route("/api/v1/reset", post(reset))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stats/stream", get(stats_stream))
        .route("/api/v1/stats/history", get(stats_history))
        .route("/api/v1/flows", get(flows))
        .route(
            "/api/v1/stages/{dir}/{chain}/{name}/command",
            post(stage_command),
        )
        .route("/qos", get(compat::get_qos).post(compat::post_qos))
        .route("/top/{file}", get(compat::profile))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::map_response(guard::errors_as_json))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// An API error: served as `{"error", "status", "field"}` with `application/json`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message, self.field.as_deref())
    }
}

pub fn error_response(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    (
        status,
        Json(json!({"error": message, "status": status.as_u16(), "field": field})),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn ui() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("ui/index.html")),
    )
}

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

async fn healthz(State(api): State<Shared>) -> Json<Value> {
    Json(json!({"ok": true, "generation": api.worker.spec().generation}))
}

/// A request body as JSON.
pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("the body is not valid JSON: {e}"),
        field: None,
    })
}

/// Ask the worker for `change` and wait (without blocking the runtime) for its answer.
pub async fn ask(api: &Api, change: Change) -> Result<Answer, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = api.worker.send(
        change,
        Some(Box::new(move |a| {
            let _ = tx.send(a);
        })),
    );
    let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the bridge is stopping");
    if !sent {
        return Err(gone());
    }
    match tokio::time::timeout(CHANGE_TIMEOUT, rx).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the change is taking longer than 120 s; it completes or fails on its own: see GET /api/v1/spec",
        )),
    }
}

/// Make a change and answer with its report: 200 when applied, 422 when refused.
pub async fn change(api: &Api, change: Change) -> Result<Json<Value>, ApiError> {
    match ask(api, change).await? {
        Answer::Changed { report, saved } => match report.outcome {
            Outcome::Refused(e) => Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.message,
                field: e.field,
            }),
            Outcome::Applied(_) => {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                v["persisted"] = json!(saved.is_some());
                v["path"] = json!(saved);
                Ok(Json(v))
            }
        },
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the worker answered a change with something else",
        )),
    }
}

async fn get_spec(State(api): State<Shared>) -> Json<Value> {
    let s = api.worker.spec();
    Json(json!({
        "generation": s.generation,
        "path": s.path,
        // The user's file is theirs: changes are written back only with --persist, so
        // what runs may differ from what the file holds.
        "persist": s.persist,
        "differs_from_file": s.differs_from_file(),
        "spec": s.spec,
        "plan": s.plan,
        "schedule": s.schedule,
        "clock": clock(&api),
    }))
}

/// The engine's clock now, and where its origin lies on the machine's clocks (so that
/// schedule times and command-log times can be lined up with other measurements).
fn clock(api: &Api) -> Value {
    let c = api.worker.clock;
    json!({
        "now_ns": c.now_ns(),
        "monotonic_origin_ns": c.monotonic_origin_ns,
        "unix_origin_ns": c.unix_origin_ns,
    })
}

async fn put_spec(State(api): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let v = json_body(&body)?;
    change(&api, Change::Replace(v)).await
}

async fn patch_spec(State(api): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let v = json_body(&body)?;
    change(&api, Change::Patch(v)).await
}

async fn reset(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    change(&api, Change::Reset).await
}

async fn validate(State(api): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let v = json_body(&body)?;
    match ask(&api, Change::Validate(v)).await? {
        Answer::Checked(Ok(plan)) => Ok(Json(json!({
            "ok": true,
            "description": synthnet_config::describe(&plan),
            "plan": plan,
        }))),
        Answer::Checked(Err(e)) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.message,
            field: e.field,
        }),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the worker answered a validation with something else",
        )),
    }
}

async fn stats(State(api): State<Shared>) -> Json<Value> {
    Json(stats_now(&api))
}

/// The stats, the schedule's progress and the commands counted per stage.
fn stats_now(api: &Api) -> Value {
    let mut v = views::stats(&api.board.read(), api.started.elapsed());
    v["schedule"] = json!(api.worker.spec().schedule);
    v["commands"] = views::commands(&api.worker.command_counts());
    v
}

/// `POST /api/v1/stages/{dir}/{chain}/{name}/command`: hand the body (any JSON) to the
/// running stage between two breaths and answer its reply. 404: no such stage; 409: the
/// stage takes no commands, or its plugin refused this one (its message); 400: the
/// body is not JSON; 413: over the link ABI's 64 KiB; 503: the plugin is down after a
/// fault (try again); 502: it faulted on the command or answered something not JSON.
async fn stage_command(
    State(api): State<Shared>,
    Path((dir, chain, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use synthnet_config::apply::CommandError;
    use synthnet_config::plan::{check_command, StageCommand, StageId};
    let id = format!("{dir}/{chain}/{name}");
    let stage: StageId = id.parse().map_err(|e: String| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no such stage: {e}"),
        field: Some("stage".into()),
    })?;
    let command = json_body(&body)?;
    check_command(&command).map_err(|e| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: e,
        field: Some("command".into()),
    })?;
    match ask(&api, Change::Command(StageCommand { stage, command })).await? {
        Answer::Commanded { at_ns, result } => match result {
            Ok(reply) => {
                Ok(([("x-synthnet-at-ns", at_ns.to_string())], Json(reply)).into_response())
            }
            Err(f) => {
                let status = match f {
                    CommandError::UnknownStage { .. } => StatusCode::NOT_FOUND,
                    CommandError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    CommandError::NoCommands { .. } | CommandError::Refused { .. } => {
                        StatusCode::CONFLICT
                    }
                    CommandError::Down { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    CommandError::Fault { .. } | CommandError::BadReply { .. } => {
                        StatusCode::BAD_GATEWAY
                    }
                };
                Err(ApiError {
                    status,
                    message: f.to_string(),
                    field: Some(id),
                })
            }
        },
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the worker answered a command with something else",
        )),
    }
}

/// Once a second, the stats into the history (at most [`HISTORY_S`] of them), without
/// what a chart does not draw (schedule, commands).
async fn keep_history(api: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let v = views::stats(&api.board.read(), api.started.elapsed());
        let mut h = api.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= HISTORY_S {
            h.pop_front();
        }
        h.push_back(v);
    }
}

/// `GET /api/v1/stats/history`: `{"samples": [...]}`, the stats of each of the last
/// 120 seconds (as `GET /api/v1/stats` answered them), oldest first.
async fn stats_history(State(api): State<Shared>) -> Json<Value> {
    let h = api.history.lock().unwrap_or_else(|e| e.into_inner());
    Json(json!({"samples": h.iter().collect::<Vec<_>>()}))
}

async fn stats_stream(
    State(api): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = futures_util::stream::unfold(
        (api, tokio::time::interval(Duration::from_secs(1))),
        |(api, mut tick)| async move {
            tick.tick().await;
            let v = stats_now(&api);
            let ev = Event::default().event("stats").data(v.to_string());
            Some((Ok(ev), (api, tick)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowQuery {
    direction: Option<String>,
    top: Option<usize>,
}

async fn flows(
    State(api): State<Shared>,
    q: Result<Query<FlowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
        field: None,
    })?;
    let direction = match q.direction.as_deref() {
        None | Some("") | Some("both") => None,
        Some(d) => Some(d.parse::<Direction>().map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
            field: Some("direction".into()),
        })?),
    };
    let pair = api.board.read();
    views::flows(&pair, direction, q.top.unwrap_or(100))
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "flow accounting is off (the bridge runs with --flow-table 0)",
            )
        })
}
