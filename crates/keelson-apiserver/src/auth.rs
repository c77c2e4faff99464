//! Authentication: who is asking. Client certificates signed by the cluster CA name the
//! user (CN) and groups (O), as in Kubernetes; bearer tokens are looked up in the server's
//! token table. A request with neither is anonymous.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The identity a TLS client certificate carried, attached to each request of its
/// connection (`None` when the client sent no certificate).
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<User>);

/// The user named by a client certificate that rustls has already verified against the
/// cluster CA.
pub fn user_from_certificate(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(User { name, groups })
}

/// Bearer tokens the server accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<String, User>);

impl Tokens {
    pub fn insert(&mut self, token: impl Into<String>, user: User) {
        self.0.insert(token.into(), user);
    }

    /// The user of the request's `Authorization: Bearer` token, if it is a known one.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<User> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.0.get(token.trim()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut tokens = Tokens::default();
        let admin = User {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        tokens.insert("s3cret", admin.clone());
        let mut headers = HeaderMap::new();
        assert_eq!(tokens.authenticate(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(tokens.authenticate(&headers), Some(admin));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert_eq!(tokens.authenticate(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert_eq!(tokens.authenticate(&headers), None);
    }
}
