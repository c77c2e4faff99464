//! The API server over real TLS: credentials on first start and their reuse, the three
//! ways of (not) authenticating, version, health and metrics.

mod support;

use anyhow::{Context, Result, ensure};
use keelson_apiserver::testing::{ClientAuth, https_get};
use support::{Running, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_get_401_status() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    for path in ["/version", "/metrics", "/api", "/api/v1/namespaces"] {
        let (code, body) =
            https_get(&server.addr, path, &server.ca, &ClientAuth::Anonymous).await?;
        ensure!(code == 401, "{path}: {code}");
        ensure!(
            body == "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n",
            "{path}: {body}"
        );
    }
    let wrong = ClientAuth::Token("not-the-token".into());
    ensure!(
        https_get(&server.addr, "/version", &server.ca, &wrong)
            .await?
            .0
            == 401
    );
    // Probes need no credentials.
    for path in ["/livez", "/readyz", "/healthz"] {
        let (code, body) =
            https_get(&server.addr, path, &server.ca, &ClientAuth::Anonymous).await?;
        ensure!(
            (code, body.as_str()) == (200, "ok"),
            "{path}: {code} {body}"
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certificate_and_token_authenticate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    for auth in [
        server.admin.clone(),
        ClientAuth::Token(server.token.clone()),
    ] {
        let (code, body) = https_get(&server.addr, "/version", &server.ca, &auth).await?;
        ensure!(code == 200, "{code} {body}");
        let version: serde_json::Value = serde_json::from_str(&body)?;
        ensure!(
            version["major"] == "1" && version["minor"] == "37",
            "{version}"
        );
        ensure!(
            version["gitVersion"] == "v1.37.0+keelson.0.1.0",
            "{version}"
        );
        ensure!(version["gitCommit"] == "abc123", "{version}");
    }
    // Unknown paths are a NotFound Status, once authenticated.
    let (code, body) = https_get(&server.addr, "/no/such/thing", &server.ca, &server.admin).await?;
    ensure!(
        code == 404 && body.contains(r#""reason":"NotFound""#),
        "{code} {body}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() -> Result<()> {
    let ours = tempfile::tempdir()?;
    let theirs = tempfile::tempdir()?;
    let server = start(ours.path()).await?;
    let other = keelson_apiserver::Pki::load_or_create(theirs.path(), &["127.0.0.1".into()])?;
    let foreign = ClientAuth::Certificate {
        cert_pem: other.admin_cert,
        key_pem: other.admin_key,
    };
    // The TLS handshake fails, or the request does; it must never be served.
    if let Ok((code, body)) = https_get(&server.addr, "/version", &server.ca, &foreign).await {
        ensure!(
            code != 200,
            "a foreign client certificate was accepted: {body}"
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_verb_resource_and_code() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    https_get(&server.addr, "/version", &server.ca, &ClientAuth::Anonymous).await?;
    https_get(&server.addr, "/version", &server.ca, &server.admin).await?;
    let (code, text) = https_get(&server.addr, "/metrics", &server.ca, &server.admin).await?;
    ensure!(code == 200);
    ensure!(
        text.contains(
            r#"keelson_apiserver_requests_total{verb="get",resource="/version",code="401"} 1"#
        ),
        "{text}"
    );
    ensure!(
        text.contains(
            r#"keelson_apiserver_requests_total{verb="get",resource="/version",code="200"} 1"#
        ),
        "{text}"
    );
    ensure!(text.contains("keelson_apiserver_request_duration_seconds_bucket"));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_created_once_and_reused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let files = [
        "tls/ca.crt",
        "tls/ca.key",
        "tls/serving.crt",
        "tls/serving.key",
        "tls/admin.crt",
        "tls/admin.key",
        "tls/admin.token",
    ];
    let server = start(dir.path()).await?;
    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)))
        .collect::<Result<_, _>>()?;
    server.stop().await?;
    for key in [
        "tls/ca.key",
        "tls/serving.key",
        "tls/admin.key",
        "tls/admin.token",
        "admin.kubeconfig",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(key))?.permissions(),
        );
        ensure!(mode & 0o077 == 0, "{key} is readable by others: {mode:o}");
    }
    let kubeconfig = std::fs::read_to_string(dir.path().join("admin.kubeconfig"))?;
    ensure!(
        kubeconfig.contains("server: https://127.0.0.1:")
            && kubeconfig.contains("client-certificate-data:")
    );

    let server = start(dir.path()).await?;
    let second: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)))
        .collect::<Result<_, _>>()?;
    ensure!(first == second, "a restart must reuse the credentials");
    // The old admin credentials still work.
    let (code, _) = https_get(&server.addr, "/version", &server.ca, &server.admin).await?;
    ensure!(code == 200);
    let serving =
        std::fs::read_to_string(dir.path().join("tls/serving.crt")).context("serving cert")?;
    ensure!(serving.starts_with("-----BEGIN CERTIFICATE-----"));
    server.stop().await
}

/// `GET path` with an `Accept` header, as the admin; returns (code, content type, body).
async fn get_accepting(
    server: &Running,
    path: &str,
    accept: &str,
) -> Result<(u16, String, String)> {
    let (code, body) = keelson_apiserver::testing::https_get_with_headers(
        &server.addr,
        path,
        &server.ca,
        &server.admin,
        &[("Accept", accept)],
    )
    .await?;
    Ok((code, body.0, body.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_served_both_ways() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

    let (code, content_type, body) = get_accepting(&server, "/apis", aggregated).await?;
    ensure!(code == 200);
    ensure!(
        content_type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        "{content_type}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(doc["kind"] == "APIGroupDiscoveryList");
    let groups: Vec<&str> = doc["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|g| g["metadata"]["name"].as_str())
        .collect();
    for group in [
        "apps",
        "batch",
        "autoscaling",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
    ] {
        ensure!(groups.contains(&group), "{group} missing from {groups:?}");
    }

    let (code, content_type, body) =
        get_accepting(&server, "/api", "application/json, */*").await?;
    ensure!(
        code == 200 && content_type == "application/json",
        "{content_type}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(
        doc["kind"] == "APIVersions" && doc["versions"][0] == "v1",
        "{doc}"
    );

    let (code, _, body) = get_accepting(&server, "/apis/apps/v1", "application/json").await?;
    ensure!(code == 200);
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    let deployments = doc["resources"]
        .as_array()
        .context("resources")?
        .iter()
        .find(|r| r["name"] == "deployments")
        .context("deployments")?;
    ensure!(
        deployments["kind"] == "Deployment"
            && deployments["namespaced"] == true
            && deployments["shortNames"][0] == "deploy"
    );

    let (code, _, body) = get_accepting(&server, "/apis/autoscaling", "application/json").await?;
    ensure!(
        code == 200 && body.contains(r#""preferredVersion":{"groupVersion":"autoscaling/v2""#),
        "{body}"
    );
    for missing in ["/apis/nope", "/apis/apps/v7"] {
        let (code, _, body) = get_accepting(&server, missing, "application/json").await?;
        ensure!(
            code == 404 && body.contains(r#""reason":"NotFound""#),
            "{missing}: {code} {body}"
        );
    }
    server.stop().await
}
