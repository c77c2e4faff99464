//! Kubernetes `Status` error responses.
//!
//! Every failed request is answered with a `Status` object whose fields come in the order
//! kube-apiserver writes them, compactly and followed by a newline: clients print the
//! message, and some tests compare the raw body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `details` of a `Status`: which object it is about.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural), e.g. `deployments`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Which fields were wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<serde_json::Value>,
    /// When to try again (429s); also sent as a `Retry-After` header.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// A failed request as Kubernetes reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: StatusCode,
    /// Upstream reason, e.g. `NotFound`, `Unauthorized`.
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<StatusDetails>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    /// Empty for failures upstream reports without one (a 500 `Status` a handler returns).
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// A path the server does not serve.
    pub fn no_such_path() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The JSON body: compact, upstream field order, trailing newline.
    pub fn body(&self) -> String {
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code.as_u16(),
        };
        let mut text = serde_json::to_string(&body).unwrap_or_else(|_| {
            // Serializing these plain fields cannot fail; keep a valid Status regardless.
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","code":500}"#
                .to_owned()
        });
        text.push('\n');
        text
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code, self.body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_come_in_upstream_order() {
        let mut error = ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            r#"services "mock-2" already exists"#,
        );
        error.details = Some(Box::new(StatusDetails {
            name: "mock-2".into(),
            group: String::new(),
            kind: "services".into(),
            ..Default::default()
        }));
        assert_eq!(
            error.body(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"services \\\"mock-2\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"mock-2\",\"kind\":\"services\"},\"code\":409}\n"
        );
    }

    #[test]
    fn unauthorized_has_no_details() {
        assert_eq!(
            ApiError::unauthorized().body(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
    }
}
