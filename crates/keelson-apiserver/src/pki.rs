//! The cluster's certificates and credentials, created on first start and reused after.
//!
//! `DATA_DIR/tls/` holds a CA, the server's serving certificate (signed by the CA, with the
//! names clients use to reach it), an admin client certificate (`CN=system:admin`,
//! `O=system:masters`, as kubeadm makes) and an admin bearer token. `DATA_DIR/admin.kubeconfig`
//! points kubectl at the server with the admin certificate. Private keys and the token are
//! written readable by the owner only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why the credentials could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Certificate { path: PathBuf, source: rcgen::Error },
    #[error("invalid name {name:?} for the serving certificate: {source}")]
    Name { name: String, source: rcgen::Error },
}

/// The user the admin credentials authenticate as.
pub const ADMIN_USER: &str = "system:admin";
/// The group that gives the admin full access.
pub const ADMIN_GROUP: &str = "system:masters";

/// PEM-encoded credentials the server and its admin use.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub admin_token: String,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_error(path: &Path) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Certificate {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` (mode `mode`), replacing it atomically.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

fn read_file(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Validity: from a day ago (clock skew) for `years`.
fn validity(params: &mut CertificateParams, years: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * years);
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// A certificate for `params` signed by the CA, and its new key, as PEM.
fn issue(
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    path: &Path,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(cert_error(path))?;
    let cert = params.signed_by(&key, issuer).map_err(cert_error(path))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// One certificate and key pair on disk, created by `make` when either file is missing.
fn cert_pair(
    dir: &Path,
    stem: &str,
    make: impl FnOnce(&Path) -> Result<(String, String), PkiError>,
) -> Result<(String, String), PkiError> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    if let (Some(cert), Some(key)) = (read_file(&cert_path)?, read_file(&key_path)?) {
        return Ok((cert, key));
    }
    let (cert, key) = make(&cert_path)?;
    write_file(&key_path, &key, 0o600)?;
    write_file(&cert_path, &cert, 0o644)?;
    Ok((cert, key))
}

impl Pki {
    /// Loads the credentials under `dir`, creating whatever is missing. `server_names` are
    /// the DNS names and IP addresses the serving certificate is valid for.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let (ca_cert, ca_key) = cert_pair(dir, "ca", |path| {
            let mut params = CertificateParams::default();
            params.distinguished_name = name("keelson-ca", None);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 10);
            let key = KeyPair::generate().map_err(cert_error(path))?;
            let cert = params.self_signed(&key).map_err(cert_error(path))?;
            Ok((cert.pem(), key.serialize_pem()))
        })?;
        let ca_path = dir.join("ca.crt");
        let ca_key_pair = KeyPair::from_pem(&ca_key).map_err(cert_error(&ca_path))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert, ca_key_pair).map_err(cert_error(&ca_path))?;

        let (serving_cert, serving_key) = cert_pair(dir, "serving", |path| {
            let mut params = CertificateParams::default();
            params.distinguished_name = name("kube-apiserver", None);
            for server_name in server_names {
                let san = match server_name.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => {
                        SanType::DnsName(server_name.clone().try_into().map_err(|source| {
                            PkiError::Name {
                                name: server_name.clone(),
                                source,
                            }
                        })?)
                    }
                };
                params.subject_alt_names.push(san);
            }
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            validity(&mut params, 10);
            issue(params, &issuer, path)
        })?;

        let (admin_cert, admin_key) = cert_pair(dir, "admin", |path| {
            let mut params = CertificateParams::default();
            params.distinguished_name = name(ADMIN_USER, Some(ADMIN_GROUP));
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            validity(&mut params, 10);
            issue(params, &issuer, path)
        })?;

        let token_path = dir.join("admin.token");
        let admin_token = match read_file(&token_path)? {
            Some(token) => token.trim().to_owned(),
            None => {
                let bytes: [u8; 32] = rand::random();
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_file(&token_path, &format!("{token}\n"), 0o600)?;
                token
            }
        };
        Ok(Pki {
            ca_cert,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            admin_token,
        })
    }

    /// A kubeconfig for the admin at `server` (e.g. `https://127.0.0.1:6443`).
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: keelson
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: keelson
  context:
    cluster: keelson
    user: admin
    namespace: default
current-context: keelson
",
            ca = b64(&self.ca_cert),
            cert = b64(&self.admin_cert),
            key = b64(&self.admin_key),
        )
    }

    /// Writes [`Pki::admin_kubeconfig`] to `path`, readable by the owner only.
    pub fn write_admin_kubeconfig(&self, path: &Path, server: &str) -> Result<(), PkiError> {
        write_file(path, &self.admin_kubeconfig(server), 0o600)
    }
}

/// The names a serving certificate should cover on this machine: loopback, the host's
/// name and addresses, the in-cluster service names, and `extra`.
pub fn default_server_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_owned();
        if !host.is_empty() {
            if let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0)) {
                names.extend(addrs.map(|a| a.ip().to_string()));
            }
            names.push(host);
        }
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}
