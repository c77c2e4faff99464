//! The HTTPS server: TLS with optional client certificates, authentication, request
//! metrics, and the routes served so far (health, version, metrics).
//!
//! Connections are accepted by hand (rather than through a framework) so that each one's
//! verified client certificate can be attached to its requests as [`PeerIdentity`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keelson_api::Registry as ApiRegistry;
use keelson_api::discovery;
use keelson_store::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{PeerIdentity, Tokens, User, user_from_certificate};
use crate::cache::{CacheConfig, CacheError, WatchCache};
use crate::pki::{ADMIN_GROUP, ADMIN_USER, Pki, PkiError, default_server_names};
use crate::rest::{self, Query, RequestLabels, Rest};
use crate::status::ApiError;

/// The Kubernetes version keelson serves the API of.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "37";

/// What the server is, for `/version`.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    /// keelson's own version, e.g. `0.1.0`.
    pub version: String,
    /// The git commit it was built from.
    pub commit: String,
}

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Credentials go to `DATA_DIR/tls`, the admin kubeconfig to `DATA_DIR/admin.kubeconfig`.
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    pub build: BuildInfo,
    /// History, bookmark and freshness settings of the watch cache.
    pub cache: CacheConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("credentials: {0}")]
    Pki(#[from] PkiError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
    #[error("setting up the cluster's objects: {0}")]
    Setup(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

type MetricLabels = [(&'static str, String); 3];

/// Request metrics: counts and latency by verb, resource and code.
#[derive(Clone)]
struct RequestMetrics {
    requests: Family<MetricLabels, Counter>,
    latency: Family<[(&'static str, String); 2], Histogram>,
}

impl RequestMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = RequestMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
            }),
        };
        let registry = registry.sub_registry_with_prefix("keelson_apiserver");
        registry.register(
            "requests",
            "API requests by verb, resource and HTTP code",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by verb and resource",
            metrics.latency.clone(),
        );
        metrics
    }
}

struct AppState {
    rest: Rest,
    tokens: Tokens,
    registry: Mutex<Registry>,
    metrics: RequestMetrics,
    build: BuildInfo,
}

/// A bound, ready-to-serve API server.
pub struct ApiServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    pki: Pki,
    kubeconfig: PathBuf,
    url: String,
}

impl ApiServer {
    /// Creates or loads the credentials, writes the admin kubeconfig, and binds the port.
    /// `registry` carries the metrics of other parts (the store); the server adds its own
    /// and serves them all on `/metrics`.
    pub async fn bind(
        config: ServerConfig,
        store: Arc<dyn Store>,
        mut registry: Registry,
    ) -> Result<Self, ServerError> {
        let addr = SocketAddr::new(config.bind_address, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Listen { addr, source })?;

        let mut names = config.tls_sans.clone();
        if !config.bind_address.is_unspecified() {
            names.push(config.bind_address.to_string());
        }
        let pki = Pki::load_or_create(&config.data_dir.join("tls"), &default_server_names(&names))?;
        let host = if config.bind_address.is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            match config.bind_address {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            }
        };
        let url = format!("https://{host}:{}", local.port());
        let kubeconfig = config.data_dir.join("admin.kubeconfig");
        pki.write_admin_kubeconfig(&kubeconfig, &url)?;

        let mut tokens = Tokens::default();
        tokens.insert(
            pki.admin_token.clone(),
            User {
                name: ADMIN_USER.into(),
                groups: vec![ADMIN_GROUP.into()],
            },
        );
        let metrics = RequestMetrics::register(&mut registry);
        let resources = ApiRegistry::builtin();
        let openapi = keelson_api::openapi::OpenApi::generate(
            &resources,
            &format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0"),
        );
        let prefixes: Vec<(String, &'static str)> = resources
            .resources()
            .iter()
            .map(|r| (rest::resource_prefix(r), r.kind))
            .collect();
        let cache = WatchCache::start(store.clone(), prefixes, config.cache, &mut registry).await?;
        let rest = Rest {
            store,
            cache: Arc::new(cache),
            registry: resources,
            openapi,
        };
        rest::ensure_namespaces(
            &rest,
            &["default", "kube-system", "kube-public", "kube-node-lease"],
        )
        .await
        .map_err(|e| ServerError::Setup(e.message))?;
        rest::ensure_priority_classes(&rest)
            .await
            .map_err(|e| ServerError::Setup(e.message))?;
        let state = Arc::new(AppState {
            rest,
            tokens,
            registry: Mutex::new(registry),
            metrics,
            build: config.build,
        });
        let router = routes(state);
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(&pki)?));
        Ok(ApiServer {
            listener,
            acceptor,
            router,
            pki,
            kubeconfig,
            url,
        })
    }

    /// `https://host:port` clients reach the server at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig written on bind.
    pub fn kubeconfig_path(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tokio::pin!(shutdown);
        loop {
            let (tcp, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Per-connection failures (e.g. the client reset) do not stop the server.
                    Err(error) if is_transient(&error) => continue,
                    Err(error) => return Err(ServerError::Accept(error)),
                },
                () = &mut shutdown => return Ok(()),
            };
            // Small writes (the tail of a response) go out at once, as Go servers do;
            // otherwise Nagle and delayed ACKs add 40 ms to some responses.
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let identity = PeerIdentity(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(user_from_certificate),
                );
                let service = hyper::service::service_fn(
                    move |mut request: Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(identity.clone());
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// TLS 1.2/1.3 with the serving certificate; client certificates are requested and, when
/// sent, must chain to the cluster CA (clients may instead authenticate with a token).
fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let chain = CertificateDer::pem_slice_iter(pki.serving_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/version", get(version))
        // The Python client asks for `/version/`.
        .route("/version/", get(version))
        .route("/metrics", get(metrics_text))
        .route("/api", get(core_discovery))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(group_discovery))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api/v1/{*path}", any(core_rest))
        .route("/apis/{group}/{version}/{*path}", any(group_rest))
        .fallback(|| async { ApiError::no_such_path() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_measure,
        ))
        .with_state(state)
}

/// The metrics label of a request that is not for a resource.
fn endpoint_label(path: &str) -> &str {
    match path {
        "/version" | "/version/" | "/livez" | "/readyz" | "/healthz" | "/metrics" => path,
        _ if path == "/api"
            || path == "/apis"
            || path.starts_with("/api/")
            || path.starts_with("/apis/") =>
        {
            "discovery"
        }
        _ => "other",
    }
}

/// Paths load balancers and probes may read without credentials.
fn is_public(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/healthz")
}

async fn authenticate_and_measure(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let verb = request.method().as_str().to_ascii_lowercase();
    let path = request.uri().path().to_owned();
    let from_cert = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let user = from_cert.or_else(|| state.tokens.authenticate(request.headers()));
    let response = match user {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None if is_public(&path) => next.run(request).await,
        None => ApiError::unauthorized().into_response(),
    };
    let code = response.status().as_u16().to_string();
    // Resource requests carry their Kubernetes verb and resource; other requests are
    // labelled by method and endpoint, with unknown paths folded together (bounded labels).
    let (verb, path) = match response.extensions().get::<RequestLabels>() {
        Some(labels) => (labels.verb.to_owned(), labels.resource.to_owned()),
        None => (verb, endpoint_label(&path).to_owned()),
    };
    state
        .metrics
        .requests
        .get_or_create(&[
            ("verb", verb.clone()),
            ("resource", path.clone()),
            ("code", code),
        ])
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&[("verb", verb), ("resource", path)])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Ready when the store answers.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.rest.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("datastore: {error}"),
        )
            .into_response(),
    }
}

async fn version(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+keelson.{}", state.build.version),
        "gitCommit": state.build.commit,
        "gitTreeState": if state.build.commit.ends_with("-dirty") { "dirty" } else { "clean" },
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut text = String::new();
    let registry = state.registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return ApiError::internal(error.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.to_string()).into_response()
}

fn accepts_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(discovery::wants_aggregated)
}

/// `GET /api`: aggregated discovery when asked for, else the legacy version list.
async fn core_discovery(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if accepts_aggregated(&headers) {
        return json_response(
            discovery::aggregated_core(&state.rest.registry),
            discovery::AGGREGATED_CONTENT_TYPE,
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:6443");
    json_response(discovery::api_versions(host), "application/json")
}

/// `GET /apis`: aggregated discovery when asked for, else the legacy group list.
async fn group_discovery(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if accepts_aggregated(&headers) {
        return json_response(
            discovery::aggregated_groups(&state.rest.registry),
            discovery::AGGREGATED_CONTENT_TYPE,
        );
    }
    json_response(
        discovery::api_group_list(&state.rest.registry),
        "application/json",
    )
}

async fn core_resources(State(state): State<Arc<AppState>>) -> Response {
    match discovery::api_resource_list(&state.rest.registry, "", "v1") {
        Some(list) => json_response(list, "application/json"),
        None => ApiError::no_such_path().into_response(),
    }
}

async fn group(State(state): State<Arc<AppState>>, UrlPath(group): UrlPath<String>) -> Response {
    match discovery::api_group(&state.rest.registry, &group) {
        Some(group) => json_response(group, "application/json"),
        None => ApiError::no_such_path().into_response(),
    }
}

async fn group_resources(
    State(state): State<Arc<AppState>>,
    UrlPath((group, version)): UrlPath<(String, String)>,
) -> Response {
    match discovery::api_resource_list(&state.rest.registry, &group, &version) {
        Some(list) => json_response(list, "application/json"),
        None => ApiError::no_such_path().into_response(),
    }
}

async fn core_rest(
    State(state): State<Arc<AppState>>,
    UrlPath(path): UrlPath<String>,
    request: Request,
) -> Response {
    resource_request(&state, "", "v1", &path, request).await
}

async fn group_rest(
    State(state): State<Arc<AppState>>,
    UrlPath((group, version, path)): UrlPath<(String, String, String)>,
    request: Request,
) -> Response {
    resource_request(&state, &group, &version, &path, request).await
}

async fn resource_request(
    state: &AppState,
    group: &str,
    version: &str,
    path: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    rest::handle(
        &state.rest,
        parts.method,
        group,
        version,
        path,
        query,
        parts.headers,
        body,
    )
    .await
}

/// `GET /openapi/v3`: where each group version's document is.
async fn openapi_index(State(state): State<Arc<AppState>>) -> Response {
    json_response(state.rest.openapi.index(), "application/json")
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}` (any `?hash=`).
async fn openapi_document(
    State(state): State<Arc<AppState>>,
    UrlPath(path): UrlPath<String>,
) -> Response {
    match state.rest.openapi.document(&path) {
        Some(document) => (
            [(header::CONTENT_TYPE, "application/json")],
            document.to_owned(),
        )
            .into_response(),
        None => ApiError::no_such_path().into_response(),
    }
}
