//! A stand-in for the Kubernetes API server, for the calls the node agent's
//! pod watch makes: list and watch of `/api/v1/pods` with a field selector.
//!
//! It serves plain HTTP on 127.0.0.1, keeps pods in memory with a
//! resourceVersion counter, and streams watch events as the API server does:
//! one JSON object per line, `{"type":"ADDED","object":{...}}`. Watches honour
//! `resourceVersion` (replaying later changes), `allowWatchBookmarks` (a
//! BOOKMARK before the server ends a watch) and `timeoutSeconds`. Lists honour
//! `limit` and `continue`. Unknown paths get a `Status` 404 as from the real
//! server. Tests add, update and delete pods while watches run.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Maximum duration of a watch when the client sends no timeoutSeconds.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// One recorded change, as a watch delivers it.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    pods: BTreeMap<String, Value>,
    resource_version: u64,
    history: Vec<Change>,
    requests: Vec<String>,
}

#[derive(Debug, Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    /// The latest resourceVersion, to wake watches.
    version: watch::Sender<u64>,
    /// Set when the server stops, to end running watches.
    stopping: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in API server.
#[derive(Debug)]
pub struct KubeApi {
    addr: SocketAddr,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

impl KubeApi {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<KubeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            store: Arc::new(Mutex::new(Store::default())),
            version: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .fallback(not_found)
            .with_state(shared.clone());
        let mut stopping = shared.stopping.subscribe();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(KubeApi {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// Returns the server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig file that points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url()))
    }

    /// Adds a pod and sends `ADDED` to watches. Sets `kind`, `apiVersion`
    /// and `metadata.resourceVersion`; the pod needs `metadata.uid`.
    pub fn add_pod(&self, pod: Value) {
        self.record("ADDED", pod);
    }

    /// Replaces a pod by uid and sends `MODIFIED`.
    pub fn update_pod(&self, pod: Value) {
        self.record("MODIFIED", pod);
    }

    /// Deletes the pod with `uid` and sends `DELETED`; returns whether it existed.
    pub fn delete_pod(&self, uid: &str) -> bool {
        let mut store = self.shared.lock();
        let Some(mut pod) = store.pods.remove(uid) else {
            return false;
        };
        store.resource_version += 1;
        let resource_version = store.resource_version;
        pod["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        store.history.push(Change {
            resource_version,
            kind: "DELETED",
            object: pod,
        });
        drop(store);
        self.shared.version.send_replace(resource_version);
        true
    }

    fn record(&self, kind: &'static str, mut pod: Value) {
        let uid = pod["metadata"]["uid"]
            .as_str()
            .expect("a pod fixture needs metadata.uid")
            .to_owned();
        let mut store = self.shared.lock();
        store.resource_version += 1;
        let resource_version = store.resource_version;
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        store.pods.insert(uid, pod.clone());
        store.history.push(Change {
            resource_version,
            kind,
            object: pod,
        });
        drop(store);
        self.shared.version.send_replace(resource_version);
    }

    /// Request lines served so far, as `GET /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Stops accepting connections and ends running watches, as an API
    /// server outage would.
    pub async fn stop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Renders a kubeconfig with one cluster at `server` and a static bearer token.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: stand-in\n  cluster:\n    server: {server}\n\
         contexts:\n\
         - name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n    namespace: default\n\
         current-context: stand-in\n\
         users:\n\
         - name: stand-in\n  user:\n    token: stand-in-token\n"
    )
}

/// Builds a response with a Kubernetes `Status` object for an error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn not_found(State(shared): State<Shared>, uri: Uri) -> Response {
    shared.lock().requests.push(format!("GET {uri}"));
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// A parsed `fieldSelector`: field paths with the value they must equal.
#[derive(Debug, Default)]
struct FieldSelector {
    equals: Vec<(String, String)>,
}

impl FieldSelector {
    fn parse(selector: Option<&String>) -> Result<FieldSelector, String> {
        let mut equals = Vec::new();
        let Some(selector) = selector.filter(|s| !s.is_empty()) else {
            return Ok(FieldSelector { equals });
        };
        for term in selector.split(',') {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("invalid field selector: {term:?}"))?;
            match field {
                "spec.nodeName" | "metadata.name" | "metadata.namespace" | "status.phase" => {}
                _ => return Err(format!("field label not supported: {field}")),
            }
            equals.push((field.to_owned(), value.to_owned()));
        }
        Ok(FieldSelector { equals })
    }

    fn matches(&self, pod: &Value) -> bool {
        self.equals.iter().all(|(field, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            pod.pointer(&pointer).and_then(Value::as_str).unwrap_or("") == value
        })
    }
}

async fn pods(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shared.lock().requests.push(format!("GET {uri}"));
    if headers.get(header::AUTHORIZATION).is_none() {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let selector = match FieldSelector::parse(query.get("fieldSelector")) {
        Ok(selector) => selector,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    if watching {
        watch_pods(shared, selector, &query)
    } else {
        list_pods(&shared, &selector, &query)
    }
}

fn list_pods(
    shared: &Shared,
    selector: &FieldSelector,
    query: &HashMap<String, String>,
) -> Response {
    let store = shared.lock();
    let all: Vec<Value> = store
        .pods
        .values()
        .filter(|pod| selector.matches(pod))
        .map(list_item)
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|token| token.parse().ok())
        .unwrap_or(0);
    let limit = query
        .get("limit")
        .and_then(|limit| limit.parse::<usize>().ok())
        .filter(|&limit| limit > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(all.len());
    let items = all.get(offset.min(end)..end).unwrap_or_default().to_vec();
    let mut metadata = json!({"resourceVersion": store.resource_version.to_string()});
    if end < all.len() {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(all.len() - end);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": metadata,
        "items": items,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Items of a list carry no `kind` or `apiVersion`, as the API server sends them.
fn list_item(pod: &Value) -> Value {
    let mut item = pod.clone();
    if let Some(object) = item.as_object_mut() {
        object.remove("kind");
        object.remove("apiVersion");
    }
    item
}

struct WatchState {
    shared: Shared,
    selector: FieldSelector,
    since: u64,
    pending: Vec<Value>,
    versions: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    done: bool,
}

fn watch_pods(
    shared: Shared,
    selector: FieldSelector,
    query: &HashMap<String, String>,
) -> Response {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let requested = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(|rv| rv.parse::<u64>());
    let mut pending = Vec::new();
    let since = {
        let store = shared.lock();
        match requested {
            Some(Ok(rv)) if rv != 0 => rv,
            Some(Err(_)) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid resourceVersion: expected a number",
                );
            }
            // Without a version, or with "0", a watch starts with the current
            // state as synthetic ADDED events.
            _ => {
                for pod in store.pods.values().filter(|pod| selector.matches(pod)) {
                    pending.push(json!({"type": "ADDED", "object": pod}));
                }
                store.resource_version
            }
        }
    };
    let state = WatchState {
        versions: shared.version.subscribe(),
        stopping: shared.stopping.subscribe(),
        shared,
        selector,
        since,
        pending,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks: matches!(
            query.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        ),
        done: false,
    };
    let stream = futures::stream::unfold(state, next_watch_line);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "body"))
}

async fn next_watch_line(
    mut state: WatchState,
) -> Option<(Result<Bytes, std::convert::Infallible>, WatchState)> {
    loop {
        if let Some(event) = state.pending.first().cloned() {
            state.pending.remove(0);
            let mut line = event.to_string();
            line.push('\n');
            return Some((Ok(Bytes::from(line)), state));
        }
        if state.done {
            return None;
        }
        {
            let store = state.shared.lock();
            for change in store
                .history
                .iter()
                .filter(|change| change.resource_version > state.since)
            {
                if state.selector.matches(&change.object) {
                    state
                        .pending
                        .push(json!({"type": change.kind, "object": change.object}));
                }
            }
            state.since = state.since.max(store.resource_version);
        }
        if !state.pending.is_empty() {
            continue;
        }
        tokio::select! {
            _ = state.versions.changed() => {}
            _ = state.stopping.wait_for(|stop| *stop) => {
                state.done = true;
            }
            _ = tokio::time::sleep_until(state.deadline) => {
                state.done = true;
                if state.bookmarks {
                    let version = state.since.to_string();
                    state.pending.push(json!({
                        "type": "BOOKMARK",
                        "object": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "metadata": {
                                "resourceVersion": version,
                                "annotations": {"k8s.io/initial-events-end": "true"}
                            }
                        }
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}
        })
    }

    async fn get(api: &KubeApi, path: &str) -> (u16, String) {
        let client = reqwest::Client::new();
        let response = client
            .get(format!("{}{path}", api.url()))
            .bearer_auth("stand-in-token")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn list_filters_by_node() {
        let api = KubeApi::start().await.unwrap();
        api.add_pod(pod("a", "node-1"));
        api.add_pod(pod("b", "node-2"));
        let (code, body) = get(&api, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1").await;
        assert_eq!(code, 200);
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["metadata"]["resourceVersion"], "2");
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["metadata"]["uid"], "a");
        assert!(list["items"][0].get("kind").is_none());
    }

    #[tokio::test]
    async fn list_pages_with_continue() {
        let api = KubeApi::start().await.unwrap();
        for uid in ["a", "b", "c"] {
            api.add_pod(pod(uid, "n"));
        }
        let (_, first) = get(&api, "/api/v1/pods?limit=2").await;
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
        let (_, rest) = get(&api, &format!("/api/v1/pods?limit=2&continue={token}")).await;
        let rest: Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(rest["items"][0]["metadata"]["uid"], "c");
        assert!(rest["metadata"].get("continue").is_none());
    }

    #[tokio::test]
    async fn watch_replays_after_version_and_times_out() {
        let api = KubeApi::start().await.unwrap();
        api.add_pod(pod("a", "n"));
        api.add_pod(pod("b", "n"));
        api.delete_pod("a");
        let (code, body) = get(
            &api,
            "/api/v1/pods?watch=true&resourceVersion=1&timeoutSeconds=1&allowWatchBookmarks=true",
        )
        .await;
        assert_eq!(code, 200);
        let events: Vec<Value> = body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, vec!["ADDED", "DELETED", "BOOKMARK"]);
        assert_eq!(events[0]["object"]["metadata"]["uid"], "b");
        assert_eq!(events[2]["object"]["metadata"]["resourceVersion"], "3");
    }

    #[tokio::test]
    async fn unknown_path_is_status_404() {
        let api = KubeApi::start().await.unwrap();
        let (code, body) = get(&api, "/apis/apps/v1/deployments").await;
        assert_eq!(code, 404);
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "NotFound");
    }

    #[tokio::test]
    async fn unsupported_field_rejected() {
        let api = KubeApi::start().await.unwrap();
        let (code, body) = get(&api, "/api/v1/pods?fieldSelector=spec.foo%3Dx").await;
        assert_eq!(code, 400);
        assert!(body.contains("field label not supported: spec.foo"));
    }
}
