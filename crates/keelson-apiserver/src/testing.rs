//! Test support (feature `testing`): a minimal HTTPS client that trusts the cluster CA and
//! authenticates like a real client would, for tests of this crate and the binary.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
/// status code and body. Bodies must not be chunked (the server sends lengths for these).
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(invalid)?).map_err(invalid)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots);
    let mut config = match auth {
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
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .to_owned();
    let name = ServerName::try_from(host.clone()).map_err(invalid)?;
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let authorization = match auth {
        ClientAuth::Token(token) => format!("Authorization: Bearer {token}\r\n"),
        _ => String::new(),
    };
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}{extra}Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A server may close without TLS close_notify; what arrived is still the response.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8(response).map_err(invalid)?;
    let code = response
        .get(9..12)
        .ok_or_else(|| invalid("short response"))?
        .parse()
        .map_err(invalid)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((code, (content_type, body.to_owned())))
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
