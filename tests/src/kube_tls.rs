//! A stand-in for an EKS cluster's Kubernetes API server over TLS, for the
//! calls containment makes: get, delete and JSON-patch pods, get
//! ReplicaSets, Deployments and StatefulSets, and create and get
//! NetworkPolicies.
//!
//! It makes its own CA and server certificate at start and serves HTTPS on
//! 127.0.0.1. Requests pass the real server's checks in the real order.
//! Authentication returns 401 unless the bearer token is a well-formed EKS
//! token and, when the test asks for it, is signed for this cluster with the
//! expected key. Authorization then returns 403 unless the test granted the
//! verb on the resource in the namespace, as RBAC would. The handlers return
//! 404, 409 `Conflict` on a UID or resourceVersion precondition, 409
//! `AlreadyExists`, and 422 for a JSON Patch that does not apply.
//!
//! Errors are `Status` objects with the real server's reasons and messages.
//! Every request is recorded with the instant it arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::eks_token;

/// User name in the stand-in's `Forbidden` messages.
pub const STANDIN_USER: &str = "tokenguard-detector";

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Grace period of a pod whose spec sets none, in seconds.
const DEFAULT_GRACE_PERIOD: i64 = 30;

/// The resources the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    ReplicaSets,
    Deployments,
    StatefulSets,
    NetworkPolicies,
}

impl Resource {
    /// Returns the plural resource name, as in RBAC rules and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ReplicaSets => "replicasets",
            Resource::Deployments => "deployments",
            Resource::StatefulSets => "statefulsets",
            Resource::NetworkPolicies => "networkpolicies",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Resource::Pods => "",
            Resource::ReplicaSets | Resource::Deployments | Resource::StatefulSets => "apps",
            Resource::NetworkPolicies => "networking.k8s.io",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::ReplicaSets => "ReplicaSet",
            Resource::Deployments => "Deployment",
            Resource::StatefulSets => "StatefulSet",
            Resource::NetworkPolicies => "NetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::Pods => "v1",
            Resource::ReplicaSets | Resource::Deployments | Resource::StatefulSets => "apps/v1",
            Resource::NetworkPolicies => "networking.k8s.io/v1",
        }
    }

    /// `resource.group`, as the API server names it in messages.
    fn qualified(self) -> String {
        match self.group() {
            "" => self.name().to_owned(),
            group => format!("{}.{group}", self.name()),
        }
    }

    fn apps(name: &str) -> Option<Resource> {
        match name {
            "replicasets" => Some(Resource::ReplicaSets),
            "deployments" => Some(Resource::Deployments),
            "statefulsets" => Some(Resource::StatefulSets),
            _ => None,
        }
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// When the request arrived, after the TLS handshake.
    pub received: Instant,
    /// `X-Amz-Date` of the bearer token, when it decodes as an EKS token.
    pub token_signed_at: Option<SystemTime>,
    /// The HTTP status of the response, or `None` while it is being handled.
    pub status: Option<u16>,
}

/// The cluster name and key a token's signature must match.
#[derive(Debug, Clone)]
struct SignatureCheck {
    cluster: String,
    access_key_id: String,
    secret_key: String,
}

type ObjectKey = (Resource, String, String);

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    /// Grants as `(verb, resource, namespace)`. Namespace `*` grants every
    /// namespace.
    grants: HashSet<(String, Resource, String)>,
    signature: Option<SignatureCheck>,
    resource_version: u64,
    next_uid: u64,
    requests: Vec<RecordedRequest>,
    auth_failures: Vec<String>,
}

impl Store {
    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }
}

#[derive(Debug, Clone, Default)]
struct Shared {
    store: Arc<Mutex<Store>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in API server.
#[derive(Debug)]
pub struct KubeTls {
    addr: SocketAddr,
    ca_pem: String,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

/// A CA certificate and key, from rcgen.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn generate(name: &str) -> Result<TestCa, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// Issues a server certificate for 127.0.0.1 and localhost.
    fn server_certificate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((certificate.der().clone(), key))
    }
}

/// Makes a new CA that signed nothing, as PEM: a client that trusts it must
/// reject the stand-in's certificate.
pub fn unrelated_ca_pem() -> String {
    TestCa::generate("unrelated CA")
        .expect("rcgen makes a CA")
        .issuer
        .pem()
}

fn tls_config(ca: &TestCa) -> std::io::Result<rustls::ServerConfig> {
    let (certificate, key) = ca.server_certificate().map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl KubeTls {
    /// Makes a CA and a server certificate, and starts serving on a free
    /// port of 127.0.0.1. Nothing is granted until the test calls
    /// [`KubeTls::grant`].
    pub async fn start() -> std::io::Result<KubeTls> {
        let ca = TestCa::generate("tokenguard stand-in CA").map_err(std::io::Error::other)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(&ca)?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let app = router(shared.clone());
        let server = tokio::spawn(serve(listener, acceptor, app));
        Ok(KubeTls {
            addr,
            ca_pem: ca.issuer.pem(),
            shared,
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Returns the PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Allows `verb` (`get`, `delete`, `patch`, `create`) on `resource` in
    /// `namespace`. Namespace `*` allows every namespace.
    pub fn grant(&self, verb: &str, resource: Resource, namespace: &str) {
        self.shared
            .lock()
            .grants
            .insert((verb.to_owned(), resource, namespace.to_owned()));
    }

    /// Allows in `namespace` every call containment makes, as the agent
    /// chart's containment Role does. The stand-in does not limit the
    /// NetworkPolicy `get` to `tokenguard-quarantine` as the Role does.
    pub fn grant_containment(&self, namespace: &str) {
        for resource in [
            Resource::Pods,
            Resource::ReplicaSets,
            Resource::Deployments,
            Resource::StatefulSets,
            Resource::NetworkPolicies,
        ] {
            self.grant("get", resource, namespace);
        }
        self.grant("delete", Resource::Pods, namespace);
        self.grant("patch", Resource::Pods, namespace);
        self.grant("create", Resource::NetworkPolicies, namespace);
    }

    /// Requires tokens to be signed with `secret_key` for access key
    /// `access_key_id` and cluster `cluster`, as STS checks them for the
    /// authenticator. Without it only the token's format is checked.
    pub fn verify_signatures(&self, cluster: &str, access_key_id: &str, secret_key: &str) {
        self.shared.lock().signature = Some(SignatureCheck {
            cluster: cluster.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret_key: secret_key.to_owned(),
        });
    }

    /// Stores `object` of `resource`, which needs `metadata.name` and
    /// `metadata.namespace`. Sets `kind`, `apiVersion`, `resourceVersion`,
    /// `creationTimestamp` and, when missing, `uid`. Returns the stored
    /// object.
    pub fn add(&self, resource: Resource, mut object: Value) -> Value {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .expect("a fixture needs metadata.namespace")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a fixture needs metadata.name")
            .to_owned();
        let mut store = self.shared.lock();
        fill_metadata(&mut store, resource, &mut object);
        store
            .objects
            .insert((resource, namespace, name), object.clone());
        object
    }

    /// Stores a pod, as [`KubeTls::add`] does.
    pub fn add_pod(&self, pod: Value) -> Value {
        self.add(Resource::Pods, pod)
    }

    /// Returns the stored object, if any.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        self.shared.lock().objects.get(&key).cloned()
    }

    /// Returns the stored pod, if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Resource::Pods, namespace, name)
    }

    /// Removes an object at once, as a finished deletion does.
    pub fn remove(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        self.shared.lock().objects.remove(&key)
    }

    /// Returns every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Returns the reason each bearer token was rejected.
    pub fn auth_failures(&self) -> Vec<String> {
        self.shared.lock().auth_failures.clone()
    }

    /// Stops serving and closes open connections.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for KubeTls {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A pod on `node` with the Ready condition `True` and no labels, as the
/// API server returns it.
pub fn pod_fixture(namespace: &str, name: &str, uid: &str, node: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "registry.example/app:1"}]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

fn fill_metadata(store: &mut Store, resource: Resource, object: &mut Value) {
    object["apiVersion"] = json!(resource.api_version());
    object["kind"] = json!(resource.kind());
    if object["metadata"]["uid"].as_str().is_none() {
        object["metadata"]["uid"] = json!(store.next_uid());
    }
    if object["metadata"]["creationTimestamp"].is_null() {
        object["metadata"]["creationTimestamp"] = json!(timestamp(SystemTime::now()));
    }
    object["metadata"]["resourceVersion"] = json!(store.next_resource_version());
}

fn timestamp(time: SystemTime) -> String {
    chrono::DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Accepts TLS connections and serves HTTP/1.1 on each until aborted.
async fn serve(listener: TcpListener, acceptor: TlsAcceptor, app: Router) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(get_pod).delete(delete_pod).patch(patch_pod),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/{resource}/{name}",
            get(get_apps),
        )
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
            post(create_network_policy),
        )
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
            get(get_network_policy),
        )
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let received = Instant::now();
    let token_signed_at = bearer_token(request.headers())
        .and_then(|token| eks_token::decode_token(token).ok())
        .map(|presigned| presigned.signed_at);
    let index = {
        let mut store = shared.lock();
        store.requests.push(RecordedRequest {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
            received,
            token_signed_at,
            status: None,
        });
        store.requests.len() - 1
    };
    let response = next.run(request).await;
    shared.lock().requests[index].status = Some(response.status().as_u16());
    response
}

async fn authenticate(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    match check_bearer(&shared, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            shared.lock().auth_failures.push(reason);
            // The real server returns only this message, whatever the cause.
            status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                Value::Null,
            )
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn check_bearer(shared: &Shared, headers: &HeaderMap) -> Result<(), String> {
    let token = bearer_token(headers).ok_or("no bearer token in the Authorization header")?;
    let presigned = eks_token::parse_token(token, SystemTime::now())?;
    let check = shared.lock().signature.clone();
    if let Some(check) = check {
        if presigned.access_key_id() != Some(check.access_key_id.as_str()) {
            return Err(format!(
                "the token is signed by access key {:?}, not {}",
                presigned.access_key_id(),
                check.access_key_id
            ));
        }
        presigned.verify_signature(&check.cluster, &check.secret_key)?;
    }
    Ok(())
}

/// Builds a `Status` failure response, without `details` when it is null.
fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if !details.is_null() {
        body["details"] = details;
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Builds `Status.details` naming an object.
fn details(resource: Resource, name: Option<&str>) -> Value {
    let mut details = json!({"kind": resource.name()});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    details
}

fn object_response(code: StatusCode, object: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object.to_string(),
    )
        .into_response()
}

fn not_found(resource: Resource, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", resource.qualified()),
        details(resource, Some(name)),
    )
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, Value::Null)
}

async fn unknown_path() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

/// Emulates RBAC: returns the `Forbidden` response unless the verb on the
/// resource is granted in the namespace.
fn forbidden(
    store: &Store,
    verb: &str,
    resource: Resource,
    namespace: &str,
    name: Option<&str>,
) -> Option<Response> {
    let granted = [namespace, "*"].iter().any(|ns| {
        store
            .grants
            .contains(&(verb.to_owned(), resource, (*ns).to_owned()))
    });
    if granted {
        return None;
    }
    let subject = match name {
        Some(name) => format!("{} \"{name}\"", resource.qualified()),
        None => resource.qualified(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{STANDIN_USER}\" cannot {verb} resource \"{}\" in API \
         group \"{}\" in the namespace \"{namespace}\"",
        resource.name(),
        resource.group()
    );
    Some(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        details(resource, name),
    ))
}

fn get_object(shared: &Shared, resource: Resource, namespace: &str, name: &str) -> Response {
    let store = shared.lock();
    if let Some(response) = forbidden(&store, "get", resource, namespace, Some(name)) {
        return response;
    }
    let key = (resource, namespace.to_owned(), name.to_owned());
    match store.objects.get(&key) {
        Some(object) => object_response(StatusCode::OK, object),
        None => not_found(resource, name),
    }
}

async fn get_pod(
    State(shared): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    get_object(&shared, Resource::Pods, &namespace, &name)
}

async fn get_apps(
    State(shared): State<Shared>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
) -> Response {
    match Resource::apps(&resource) {
        Some(resource) => get_object(&shared, resource, &namespace, &name),
        None => unknown_path().await,
    }
}

async fn get_network_policy(
    State(shared): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    get_object(&shared, Resource::NetworkPolicies, &namespace, &name)
}

/// The `DeleteOptions` fields the stand-in honours.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(query: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, String> {
    let mut options = DeleteOptions::default();
    if !body.is_empty() {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("invalid DeleteOptions: {error}"))?;
        options.grace_period_seconds = value["gracePeriodSeconds"].as_i64();
        options.uid = value["preconditions"]["uid"].as_str().map(str::to_owned);
        options.resource_version = value["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
    }
    if options.grace_period_seconds.is_none()
        && let Some(seconds) = query.get("gracePeriodSeconds")
    {
        let seconds = seconds
            .parse()
            .map_err(|_| format!("invalid gracePeriodSeconds {seconds:?}"))?;
        options.grace_period_seconds = Some(seconds);
    }
    Ok(options)
}

/// Builds the real server's response to a failed delete precondition: the
/// storage layer's `StorageError` text inside a `Conflict` status.
fn precondition_conflict(
    namespace: &str,
    name: &str,
    field: &str,
    want: &str,
    have: &str,
) -> Response {
    let message = format!(
        "Operation cannot be fulfilled on pods \"{name}\": StorageError: invalid object, Code: 4, \
         Key: /registry/pods/{namespace}/{name}, ResourceVersion: 0, AdditionalErrorMsg: \
         Precondition failed: {field} in precondition: {want}, {field} in object meta: {have}"
    );
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &message,
        details(Resource::Pods, Some(name)),
    )
}

async fn delete_pod(
    State(shared): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut store = shared.lock();
    if let Some(response) = forbidden(&store, "delete", Resource::Pods, &namespace, Some(&name)) {
        return response;
    }
    let options = match delete_options(&query, &body) {
        Ok(options) => options,
        Err(message) => return bad_request(&message),
    };
    let key = (Resource::Pods, namespace.clone(), name.clone());
    let Some(pod) = store.objects.get(&key).cloned() else {
        return not_found(Resource::Pods, &name);
    };

    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    if let Some(want) = &options.uid
        && want != uid
    {
        return precondition_conflict(&namespace, &name, "UID", want, uid);
    }
    let version = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if let Some(want) = &options.resource_version
        && want != version
    {
        return precondition_conflict(&namespace, &name, "ResourceVersion", want, version);
    }

    let grace = options
        .grace_period_seconds
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(DEFAULT_GRACE_PERIOD);
    let scheduled = pod["spec"]["nodeName"].as_str().is_some();
    if grace <= 0 || !scheduled {
        store.objects.remove(&key);
        return object_response(StatusCode::OK, &pod);
    }

    // A graceful delete marks the pod and leaves it to the kubelet. A second
    // delete may only shorten the grace period.
    let mut pod = pod;
    let previous = pod["metadata"]["deletionGracePeriodSeconds"].as_i64();
    if previous.is_none_or(|previous| grace < previous) {
        let deadline = SystemTime::now() + Duration::from_secs(grace.unsigned_abs());
        pod["metadata"]["deletionTimestamp"] = json!(timestamp(deadline));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        pod["metadata"]["resourceVersion"] = json!(store.next_resource_version());
        store.objects.insert(key, pod.clone());
    }
    object_response(StatusCode::OK, &pod)
}

async fn patch_pod(
    State(shared): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut store = shared.lock();
    if let Some(response) = forbidden(&store, "patch", Resource::Pods, &namespace, Some(&name)) {
        return response;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/json-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json-patch+json (the stand-in serves JSON Patch only, not \
                 {content_type:?})"
            ),
            Value::Null,
        );
    }
    let patch: json_patch::Patch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(error) => return bad_request(&error.to_string()),
    };
    let key = (Resource::Pods, namespace, name.clone());
    let Some(pod) = store.objects.get(&key) else {
        return not_found(Resource::Pods, &name);
    };

    let mut patched = pod.clone();
    if json_patch::patch(&mut patched, &patch.0).is_err() {
        // The real server drops the JSON Patch error and sends this generic
        // `Invalid` status with empty details.
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "the server rejected our request due to an error in our request",
            json!({}),
        );
    }
    if patched["metadata"]["uid"] != pod["metadata"]["uid"] {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("Pod \"{name}\" is invalid: metadata.uid: Invalid value: field is immutable"),
            json!({"name": name, "kind": "Pod", "causes": [{
                "reason": "FieldValueInvalid",
                "message": "Invalid value: field is immutable",
                "field": "metadata.uid"
            }]}),
        );
    }
    patched["metadata"]["resourceVersion"] = json!(store.next_resource_version());
    store.objects.insert(key, patched.clone());
    object_response(StatusCode::OK, &patched)
}

async fn create_network_policy(
    State(shared): State<Shared>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Response {
    let resource = Resource::NetworkPolicies;
    let mut store = shared.lock();
    if let Some(response) = forbidden(&store, "create", resource, &namespace, None) {
        return response;
    }

    let mut policy: Value = match serde_json::from_slice(&body) {
        Ok(policy) => policy,
        Err(error) => return bad_request(&error.to_string()),
    };
    let Some(name) = policy["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "NetworkPolicy.networking.k8s.io \"\" is invalid: metadata.name: Required value: \
             name or generateName is required",
            json!({"kind": "NetworkPolicy", "group": "networking.k8s.io"}),
        );
    };
    match policy["metadata"]["namespace"].as_str() {
        Some(ns) if ns != namespace => {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the \
                 request",
            );
        }
        _ => policy["metadata"]["namespace"] = json!(namespace),
    }

    let key = (resource, namespace, name.clone());
    if store.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", resource.qualified()),
            details(resource, Some(&name)),
        );
    }

    policy["metadata"]["uid"] = Value::Null;
    fill_metadata(&mut store, resource, &mut policy);
    store.objects.insert(key, policy.clone());
    object_response(StatusCode::CREATED, &policy)
}
