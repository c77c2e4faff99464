//! Test support (feature `testing`): a minimal HTTPS client that trusts the cluster CA and
//! authenticates like a real client would, for tests of this crate and the binary.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How the test client proves who it is.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    Anonymous,
    Token(String),
    Certificate { cert_pem: String, key_pem: String },
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// `GET path` on `addr` (`127.0.0.1:port`) over TLS verified against `ca_pem`; returns the
/// status code and body.
pub async fn https_get(
    addr: &str,
    path: &str,
    ca_pem: &str,
    auth: &ClientAuth,
) -> std::io::Result<(u16, String)> {
    let (code, (_, body)) = https_get_with_headers(addr, path, ca_pem, auth, &[]).await?;
    Ok((code, body))
}

/// [`https_get`] with extra request headers; also returns the response's content type.
pub async fn https_get_with_headers(
    addr: &str,
    path: &str,
    ca_pem: &str,
    auth: &ClientAuth,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, (String, String))> {
    let response = Client::new(addr, ca_pem, auth.clone())
        .request("GET", path, headers, None)
        .await?;
    Ok((response.code, (response.content_type, response.body)))
}

/// A response, its body de-chunked.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub code: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A test client for one server: HTTPS to `addr`, trusting `ca_pem`, as `auth`.
#[derive(Clone, Debug)]
pub struct Client {
    addr: String,
    ca_pem: String,
    auth: ClientAuth,
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

impl Client {
    pub fn new(addr: &str, ca_pem: &str, auth: ClientAuth) -> Self {
        Client {
            addr: addr.to_owned(),
            ca_pem: ca_pem.to_owned(),
            auth,
        }
    }

    async fn connect(&self) -> std::io::Result<(Tls, String)> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.map_err(invalid)?).map_err(invalid)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots);
        let mut config = match &self.auth {
            ClientAuth::Certificate { cert_pem, key_pem } => {
                let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(invalid)?;
                builder.with_client_auth_cert(chain, key).map_err(invalid)?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(host, _)| host)
            .to_owned();
        let name = ServerName::try_from(host.clone()).map_err(invalid)?;
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok((tls, host))
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        let mut reader = self.send(method, path, headers, body).await?;
        let (code, content_type, chunked, length) = read_head(&mut reader).await?;
        let body = if chunked {
            let mut body = Vec::new();
            while let Some(chunk) = read_chunk(&mut reader).await? {
                body.extend(chunk);
            }
            body
        } else {
            let mut body = Vec::new();
            match length {
                Some(n) => {
                    body.resize(n, 0);
                    reader.read_exact(&mut body).await?;
                }
                // A server may close without TLS close_notify; what arrived is the body.
                None => {
                    let _ = reader.read_to_end(&mut body).await;
                }
            }
            body
        };
        Ok(HttpResponse {
            code,
            content_type,
            body: String::from_utf8(body).map_err(invalid)?,
        })
    }

    pub async fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("GET", path, &[], None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> std::io::Result<HttpResponse> {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &str) -> std::io::Result<HttpResponse> {
        self.request(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("DELETE", path, &[], None).await
    }

    /// Opens a watch (`path` must ask for one) and returns a stream of its events.
    pub async fn watch(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<WatchEvents> {
        let mut reader = self.send("GET", path, headers, None).await?;
        let (code, _, chunked, _) = read_head(&mut reader).await?;
        if code != 200 || !chunked {
            return Err(invalid(format!(
                "watch answered {code} (chunked: {chunked})"
            )));
        }
        Ok(WatchEvents {
            reader,
            pending: Vec::new(),
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<BufReader<Tls>> {
        let (mut tls, host) = self.connect().await?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let ClientAuth::Token(token) = &self.auth {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        match tls.write_all(request.as_bytes()).await {
            Ok(()) => {}
            // The server may answer (413) and close before taking the whole body: the
            // answer is still there to read.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(e),
        }
        Ok(BufReader::new(tls))
    }
}

/// One kept-alive HTTP/1.1 connection, for many requests in a row (benchmarks).
pub struct Connection {
    reader: BufReader<Tls>,
    host: String,
    auth: ClientAuth,
}

impl Client {
    /// Opens a connection that stays open across requests.
    pub async fn connection(&self) -> std::io::Result<Connection> {
        let (tls, host) = self.connect().await?;
        Ok(Connection {
            reader: BufReader::new(tls),
            host,
            auth: self.auth.clone(),
        })
    }
}

impl Connection {
    /// Sends one request and reads its whole response; the connection stays open.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let ClientAuth::Token(token) = &self.auth {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(content_type) = content_type {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        let body = body.unwrap_or_default();
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        let (code, content_type, chunked, length) = read_head(&mut self.reader).await?;
        let mut bytes = Vec::new();
        if chunked {
            while let Some(chunk) = read_chunk(&mut self.reader).await? {
                bytes.extend(chunk);
            }
        } else {
            bytes.resize(length.unwrap_or(0), 0);
            self.reader.read_exact(&mut bytes).await?;
        }
        Ok(HttpResponse {
            code,
            content_type,
            body: String::from_utf8(bytes).map_err(invalid)?,
        })
    }
}

/// The events of a watch, one JSON object each.
pub struct WatchEvents {
    reader: BufReader<Tls>,
    pending: Vec<u8>,
}

impl WatchEvents {
    /// The next event, `None` when the server ended the stream.
    pub async fn next(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&line).map(Some).map_err(invalid);
            }
            match read_chunk(&mut self.reader).await? {
                Some(chunk) => self.pending.extend(chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Reads the status line and headers: (code, content type, chunked, content length).
async fn read_head(
    reader: &mut BufReader<Tls>,
) -> std::io::Result<(u16, String, bool, Option<usize>)> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let code = line
        .get(9..12)
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?
        .parse()
        .map_err(invalid)?;
    let (mut content_type, mut chunked, mut length) = (String::new(), false, None);
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            return Ok((code, content_type, chunked, length));
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_owned(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => length = value.parse().ok(),
            _ => {}
        }
    }
}

/// One chunk of a chunked body; `None` at the last chunk (or when the connection ends).
async fn read_chunk(reader: &mut BufReader<Tls>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
        .map_err(invalid)?;
    if size == 0 {
        // Trailers (none are sent) end with an empty line; consume it so the connection
        // can carry the next response.
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                return Ok(None);
            }
        }
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).await?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

/// The kubectl the tests run: `$KEELSON_KUBECTL`, else the one `dev/setup` installs from
/// PyPI into the repository's `.tools/venv`. Fails (rather than skipping tests) when
/// neither exists.
pub fn kubectl() -> std::io::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("KEELSON_KUBECTL") {
        return Ok(path.into());
    }
    let installed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/kubectl");
    if installed.exists() {
        return Ok(installed);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "kubectl not found at {} and KEELSON_KUBECTL is not set: run ./dev/setup",
            installed.display()
        ),
    ))
}

/// Starts an API server over a fresh SQLite store under `dir`, on a free loopback port,
/// serving in the background for the rest of the test; returns its admin kubeconfig
/// (what in-process components and kube-rs clients connect with).
pub async fn start_in_process(
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    use keelson_store::{SqliteConfig, SqliteStore, Store};
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.join("db/state.db"))).await?);
    let config = crate::ServerConfig {
        data_dir: dir.to_path_buf(),
        bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 0,
        tls_sans: vec![],
        build: crate::BuildInfo {
            version: "test".into(),
            commit: "test".into(),
        },
        cache: Default::default(),
    };
    let server = crate::ApiServer::bind(config, store, Default::default()).await?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    tokio::spawn(server.serve(std::future::pending()));
    Ok(kubeconfig)
}

/// Polls `check` every 100 ms until it gives a value (up to 30 s): for waiting on what
/// controllers, schedulers and agents do in the background. The error names `what`, or
/// carries the first error `check` returned.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> std::io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Box<dyn std::error::Error + Send + Sync>>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => return Err(std::io::Error::other(format!("{what}: {error}"))),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "timed out waiting for {what}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
