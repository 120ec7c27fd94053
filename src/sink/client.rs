//! Building the Elasticsearch client from `[elasticsearch]`: node URLs or an Elastic Cloud id,
//! basic / API key / bearer authentication with secrets read inline, from the environment or
//! from a file, TLS trust (system roots, a CA file, or `insecure`), and the sink's error type;
//! and [`BulkEndpoint`], which sends `_bulk` requests past the crate's transport (see there why).
//!
//! Secrets are only ever handed to the client; errors name the config key and the variable or
//! file a secret came from, never its value. The `elasticsearch` crate's own `Debug` prints
//! credentials, so nothing here derives `Debug` over a client.
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use bytes::Bytes;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::headers::DEFAULT_USER_AGENT;
use elasticsearch::http::transport::{
    CloudConnectionPool, ConnectionPool, MultiNodeConnectionPool, SingleNodeConnectionPool,
    TransportBuilder,
};
use reqwest_es::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};

use crate::bulk_buffer::SharedBody;
use crate::config::ElasticsearchConfig;
use crate::secret::Secret;

/// What can go wrong setting up or talking to Elasticsearch, outside per-document outcomes.
/// Never carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The `[elasticsearch]` configuration cannot be used.
    #[error("config key `elasticsearch.{field}`: {reason}")]
    Config { field: String, reason: String },
    /// The request did not get an HTTP response (connection refused, TLS, timeout).
    #[error("{what}: no response from Elasticsearch: {reason}")]
    Transport { what: String, reason: String },
    /// An HTTP error status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// A response that is not what the API documents.
    #[error("{what}: unexpected response: {reason}")]
    Response { what: String, reason: String },
    /// The sources cannot be set up together (e.g. one index pattern, two layouts).
    #[error("setup: {0}")]
    Setup(String),
}

impl SinkError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SinkError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// How requests authenticate, for logs and `flowlogd check` (no values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    None,
    Basic,
    ApiKey,
    Bearer,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::Basic => "basic",
            AuthKind::ApiKey => "api_key",
            AuthKind::Bearer => "bearer",
        }
    }
}

/// A client and what it points at.
#[derive(Clone)]
pub(crate) struct Connection {
    pub client: Elasticsearch,
    /// Where `_bulk` requests go: the same nodes, credentials and trust as `client`.
    pub bulk: std::sync::Arc<BulkEndpoint>,
    /// Node URLs or `cloud:<name>`, safe to log.
    pub endpoints: Vec<String>,
    pub auth: AuthKind,
    pub tls: &'static str,
}

/// An optional secret of `[elasticsearch]` (see [`crate::secret::load_secret`]), its error
/// naming the `elasticsearch.` key.
pub fn resolve_secret(
    field: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SinkError> {
    crate::secret::load_secret(field, inline, env, file)
        .map_err(|e| SinkError::config(e.key, e.reason))
}

/// The credentials the config asks for, resolved.
fn credentials(config: &ElasticsearchConfig) -> Result<(Option<Credentials>, AuthKind), SinkError> {
    let password = resolve_secret(
        "password",
        config.password.as_ref(),
        config.password_env.as_deref(),
        config.password_file.as_deref(),
    )?;
    let api_key = resolve_secret(
        "api_key",
        config.api_key.as_ref(),
        config.api_key_env.as_deref(),
        config.api_key_file.as_deref(),
    )?;
    let bearer = resolve_secret(
        "bearer_token",
        config.bearer_token.as_ref(),
        config.bearer_token_env.as_deref(),
        config.bearer_token_file.as_deref(),
    )?;
    let kinds = usize::from(password.is_some() || config.username.is_some())
        + usize::from(api_key.is_some())
        + usize::from(bearer.is_some());
    if kinds > 1 {
        return Err(SinkError::config(
            "username",
            "set only one way to authenticate: `username` + `password`, `api_key` or `bearer_token`",
        ));
    }
    match (&config.username, password) {
        (Some(user), Some(password)) => {
            return Ok((
                Some(Credentials::Basic(
                    user.clone(),
                    password.expose().to_owned(),
                )),
                AuthKind::Basic,
            ));
        }
        (Some(_), None) => {
            return Err(SinkError::config(
                "password",
                "`username` is set: set `password`, `password_env` or `password_file` too",
            ));
        }
        (None, Some(_)) => {
            return Err(SinkError::config(
                "username",
                "a password is set but no `username`",
            ));
        }
        (None, None) => {}
    }
    if let Some(key) = api_key {
        let key = key.expose().trim();
        // The `encoded` form Elasticsearch returns, or `id:api_key` as shown beside it.
        let creds = match key.split_once(':') {
            Some((id, secret)) => Credentials::ApiKey(id.to_owned(), secret.to_owned()),
            None => Credentials::EncodedApiKey(key.to_owned()),
        };
        return Ok((Some(creds), AuthKind::ApiKey));
    }
    if let Some(token) = bearer {
        return Ok((
            Some(Credentials::Bearer(token.expose().trim().to_owned())),
            AuthKind::Bearer,
        ));
    }
    Ok((None, AuthKind::None))
}

/// Parses one node URL; refuses credentials in it (they would end up in error messages).
fn parse_node_url(i: usize, raw: &str) -> Result<Url, SinkError> {
    let field = format!("urls[{i}]");
    let url = Url::parse(raw.trim()).map_err(|e| {
        // The text may hold a password in a malformed userinfo part: do not echo it.
        SinkError::config(&field, format!("not a URL ({e})"))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SinkError::config(
            &field,
            "must not carry credentials: use `username` and `password_env`/`password_file` instead",
        ));
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(SinkError::config(
            &field,
            format!("scheme `{}`: expected http or https", url.scheme()),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SinkError::config(
            &field,
            "must not have a query or fragment",
        ));
    }
    Ok(url)
}

/// How the server's certificate is checked.
enum Trust<'a> {
    /// The client library's roots.
    Roots,
    /// The CA bundle read from this path: its PEM text.
    CaFile(&'a Path, Vec<u8>),
    /// Not at all (`insecure`).
    Nothing,
}

impl Trust<'_> {
    /// The elasticsearch crate's form of it, once for each client that takes it (its
    /// certificates cannot be cloned); the CA file was read once, by [`tls`].
    fn validation(&self) -> Result<Option<CertificateValidation>, SinkError> {
        Ok(match self {
            Trust::Roots => None,
            Trust::CaFile(path, pem) => Some(CertificateValidation::Full(parse_ca(path, pem)?)),
            Trust::Nothing => Some(CertificateValidation::None),
        })
    }
}

fn tls(config: &ElasticsearchConfig) -> Result<(Trust<'_>, &'static str), SinkError> {
    match (&config.ca_file, config.insecure) {
        (Some(_), true) => Err(SinkError::config(
            "insecure",
            "`insecure = true` and `ca_file` contradict each other: set one",
        )),
        (None, true) => {
            tracing::warn!(
                "elasticsearch.insecure = true: TLS certificates are NOT verified; anyone on the network path can read and alter what flowlogd sends"
            );
            Ok((Trust::Nothing, "insecure (no verification)"))
        }
        (Some(path), false) => {
            let pem = crate::secret::read_capped(path, MAX_CA_FILE_BYTES)
                .map_err(|e| SinkError::config("ca_file", e.to_string()))?;
            Ok((Trust::CaFile(path, pem), "ca_file"))
        }
        (None, false) => Ok((Trust::Roots, "system roots")),
    }
}

/// Largest CA bundle read for `ca_file` (a system bundle of every public root is ~220 KiB).
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The certificates of the CA file at `path`, whose text is `pem`.
fn parse_ca(path: &Path, pem: &[u8]) -> Result<Certificate, SinkError> {
    Certificate::from_pem(pem).map_err(|e| {
        SinkError::config(
            "ca_file",
            format!("`{}` holds no usable PEM certificate: {e}", path.display()),
        )
    })
}

/// Builds the client. Reads secret files and the CA file; no network I/O.
pub(crate) fn connect(config: &ElasticsearchConfig) -> Result<Connection, SinkError> {
    let (creds, auth) = credentials(config)?;
    let (trust, tls_mode) = tls(config)?;
    // Before the node URLs are parsed: a bad CA file is reported first, as it always was.
    let validation = trust.validation()?;
    let (mut builder, nodes, endpoints) = if let Some(cloud_id) = &config.cloud_id {
        let pool = CloudConnectionPool::new(cloud_id)
            .map_err(|e| SinkError::config("cloud_id", format!("not an Elastic Cloud id: {e}")))?;
        let name = cloud_id.split_once(':').map(|(n, _)| n).unwrap_or("?");
        let nodes: Box<dyn ConnectionPool> = Box::new(pool.clone());
        (
            TransportBuilder::new(pool),
            nodes,
            vec![format!("cloud:{name}")],
        )
    } else {
        let urls = config
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| parse_node_url(i, u))
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = urls.iter().map(|u| u.to_string()).collect();
        let (builder, nodes): (_, Box<dyn ConnectionPool>) = match urls.len() {
            0 => {
                return Err(SinkError::config(
                    "urls",
                    "set at least one URL or `cloud_id`",
                ));
            }
            1 => {
                let pool = SingleNodeConnectionPool::new(urls.into_iter().next().expect("one URL"));
                (TransportBuilder::new(pool.clone()), Box::new(pool))
            }
            _ => {
                let pool = MultiNodeConnectionPool::round_robin(urls, None);
                (TransportBuilder::new(pool.clone()), Box::new(pool))
            }
        };
        (builder, nodes, endpoints)
    };
    let bulk = BulkEndpoint::new(config, nodes, creds.as_ref(), &trust)?;
    builder = builder.timeout(config.request_timeout);
    if let Some(c) = creds {
        builder = builder.auth(c);
    }
    if let Some(v) = validation {
        builder = builder.cert_validation(v);
    }
    let transport = builder
        .build()
        .map_err(|e| client_not_built(config, e.to_string()))?;
    Ok(Connection {
        client: Elasticsearch::new(transport),
        bulk: std::sync::Arc::new(bulk),
        endpoints,
        auth,
        tls: tls_mode,
    })
}

/// An HTTP client that could not be built: blamed on the CA file when there is one (its
/// certificates are what the client parses), else on the URLs.
fn client_not_built(config: &ElasticsearchConfig, reason: String) -> SinkError {
    let field = if config.ca_file.is_some() {
        "ca_file"
    } else {
        "urls"
    };
    SinkError::config(field, format!("cannot build the HTTP client: {reason}"))
}

/// Sends `_bulk` requests whose body is a batch's shared buffers, as they are, with the reqwest
/// 0.12 client the `elasticsearch` crate builds on (same version and TLS feature, so trust
/// behaves alike), to the node the crate's own connection pool names. Why not the crate's
/// transport: it takes a body as one contiguous buffer, so each batch had to be copied into
/// one first (~9% of the daemon's CPU end to end, docs/PERFORMANCE.md). This works around that
/// gap only; every other request goes through the crate. No `Debug`: it holds credentials.
pub(crate) struct BulkEndpoint {
    client: reqwest_es::Client,
    nodes: Box<dyn ConnectionPool>,
    /// Marked sensitive, so that no `Debug` of a request shows it.
    authorization: Option<HeaderValue>,
}

impl BulkEndpoint {
    fn new(
        config: &ElasticsearchConfig,
        nodes: Box<dyn ConnectionPool>,
        credentials: Option<&Credentials>,
        trust: &Trust<'_>,
    ) -> Result<BulkEndpoint, SinkError> {
        let mut builder = reqwest_es::Client::builder().timeout(config.request_timeout);
        match trust.validation()? {
            None | Some(CertificateValidation::Default) => {}
            Some(CertificateValidation::Full(chain)) => {
                for certificate in chain {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            Some(CertificateValidation::None) => {
                builder = builder.danger_accept_invalid_certs(true)
            }
        }
        let client = builder
            .build()
            .map_err(|e| client_not_built(config, error_chain(&e)))?;
        let authorization = credentials.map(authorization).transpose()?.flatten();
        Ok(BulkEndpoint {
            client,
            nodes,
            authorization,
        })
    }

    /// POSTs `body` to `_bulk` with `filter_path`: the status and the response body, or why no
    /// response came.
    pub(crate) async fn post(
        &self,
        filter_path: &str,
        body: SharedBody,
    ) -> Result<(u16, Bytes), String> {
        let mut url = self
            .nodes
            .next()
            .url()
            .join("_bulk")
            .map_err(|e| format!("the `_bulk` URL: {e}"))?;
        url.query_pairs_mut()
            .append_pair("filter_path", filter_path);
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(ACCEPT, "application/json")
            // The name the crate's own requests give, so that the engine's logs and a proxy's
            // rules see one client.
            .header(USER_AGENT, DEFAULT_USER_AGENT);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = request
            .body(reqwest_es::Body::wrap(SegmentsBody::new(body)))
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading the response: {}", error_chain(&e)))?;
        Ok((status, bytes))
    }
}

/// The `Authorization` header of `credentials`, as the elasticsearch crate writes it, marked
/// sensitive. Errors name the config key whose value an HTTP header cannot carry.
fn authorization(credentials: &Credentials) -> Result<Option<HeaderValue>, SinkError> {
    let (field, value) = match credentials {
        Credentials::Basic(user, password) => (
            "password",
            format!(
                "Basic {}",
                BASE64_STANDARD.encode(format!("{user}:{password}"))
            ),
        ),
        Credentials::Bearer(token) => ("bearer_token", format!("Bearer {token}")),
        Credentials::ApiKey(id, key) => (
            "api_key",
            format!("ApiKey {}", BASE64_STANDARD.encode(format!("{id}:{key}"))),
        ),
        Credentials::EncodedApiKey(key) => ("api_key", format!("ApiKey {key}")),
        // flowlogd configures neither client certificates nor a raw header.
        _ => return Ok(None),
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        SinkError::config(
            field,
            "holds a character an HTTP header cannot carry (a line break?)",
        )
    })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

/// A bulk body's shared buffers as an HTTP body: each is written as it is (hyper queues them
/// for vectored writes), and the exact length gives the request a `Content-Length`.
struct SegmentsBody {
    segments: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl SegmentsBody {
    fn new(body: SharedBody) -> SegmentsBody {
        SegmentsBody {
            remaining: body.len() as u64,
            segments: body.into_segments().into_iter(),
        }
    }
}

impl http_body::Body for SegmentsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let next = self.segments.next();
        if let Some(segment) = &next {
            self.remaining = self.remaining.saturating_sub(segment.len() as u64);
        }
        Poll::Ready(next.map(|segment| Ok(http_body::Frame::data(segment))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// An error with its causes, `: `-joined (reqwest puts "connection refused" two levels down).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn es(extra: &str) -> ElasticsearchConfig {
        let text = format!(
            "[[source]]\nname = \"s\"\ncontainer = \"c\"\naccount = \"a\"\n[source.auth]\nmethod = \"azure_cli\"\n[elasticsearch]\n{extra}\n"
        );
        Config::from_toml_str(&text).unwrap().elasticsearch
    }

    #[test]
    fn auth_forms_resolve_and_never_show_in_debug_or_errors() {
        let c = connect(&es("username = \"elastic\"\npassword = \"pw-S3CRET-1\"")).unwrap();
        assert_eq!(c.auth, AuthKind::Basic);
        let c = connect(&es("api_key = \"a2V5LVMzQ1JFVC0y\"")).unwrap();
        assert_eq!(c.auth, AuthKind::ApiKey);
        let c = connect(&es("api_key = \"id:key-S3CRET-3\"")).unwrap();
        assert_eq!(c.auth, AuthKind::ApiKey);
        let c = connect(&es("bearer_token = \"tok-S3CRET-4\"")).unwrap();
        assert_eq!(c.auth, AuthKind::Bearer);
        assert_eq!(connect(&es("")).unwrap().auth, AuthKind::None);

        let config =
            es("username = \"elastic\"\npassword = \"pw-S3CRET-5\"\napi_key = \"k-S3CRET-6\"");
        assert!(!format!("{config:?}").contains("S3CRET"));
        let e = connect(&config).err().unwrap().to_string();
        assert!(e.contains("only one way") && !e.contains("S3CRET"), "{e}");
        let e = connect(&es("password = \"pw-S3CRET-7\""))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("elasticsearch.username") && !e.contains("S3CRET"),
            "{e}"
        );
        let e = connect(&es("username = \"u\"")).err().unwrap().to_string();
        assert!(e.contains("elasticsearch.password"), "{e}");
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = resolve_secret("password", None, None, Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-file");
        // SAFETY: unique variable name, no other test touches it.
        unsafe { std::env::set_var("FLOWLOGD_TEST_ES_PW_41C7", "from-env") };
        let s = resolve_secret("password", None, Some("FLOWLOGD_TEST_ES_PW_41C7"), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-env");
        let e = resolve_secret("api_key", None, Some("FLOWLOGD_TEST_UNSET_88AA"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("elasticsearch.api_key_env") && e.contains("FLOWLOGD_TEST_UNSET_88AA"),
            "{e}"
        );
        let e = resolve_secret("api_key", None, None, Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_key_file") && e.contains("nope"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = resolve_secret("password", None, None, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = resolve_secret("password", Some(&Secret::new("x")), Some("V"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only one"), "{e}");
        assert!(
            resolve_secret("password", None, None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        let e = connect(&es(
            "urls = [\"http://elastic:pw-S3CRET-8@127.0.0.1:9200\"]",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("urls[0]")
                && e.contains("must not carry credentials")
                && !e.contains("S3CRET"),
            "{e}"
        );
        let e = connect(&es("urls = [\"ftp://x\"]"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected http or https"), "{e}");
        let c = connect(&es("urls = [\"http://a:9200\", \"http://b:9200/\"]")).unwrap();
        assert_eq!(c.endpoints, ["http://a:9200/", "http://b:9200/"]);
    }

    #[test]
    fn tls_options() {
        let c = connect(&es("urls = [\"https://es:9200\"]\ninsecure = true")).unwrap();
        assert!(c.tls.contains("insecure"));
        let e = connect(&es("ca_file = \"/nonexistent/ca.pem\""))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("elasticsearch.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = connect(&es(&format!("ca_file = \"{}\"", bad.display())))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca_file"), "{e}");
        let e = connect(&es(&format!(
            "ca_file = \"{}\"\ninsecure = true",
            bad.display()
        )))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("contradict"), "{e}");
    }

    #[test]
    fn cloud_id_is_used_instead_of_urls() {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode("cloud-endpoint.example$es-uuid$kibana-uuid");
        let c = connect(&es(&format!(
            "cloud_id = \"my-deployment:{encoded}\"\napi_key = \"k\""
        )))
        .unwrap();
        assert_eq!(c.endpoints, ["cloud:my-deployment"]);
        let e = connect(&es("cloud_id = \"garbage\""))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cloud_id"), "{e}");
    }

    #[test]
    fn bulk_requests_carry_the_authorization_header_the_elasticsearch_crate_writes_marked_sensitive()
     {
        let cases = [
            (
                Credentials::Basic("elastic".into(), "pw".into()),
                "Basic ZWxhc3RpYzpwdw==",
            ),
            (
                Credentials::ApiKey("id".into(), "key".into()),
                "ApiKey aWQ6a2V5",
            ),
            (Credentials::EncodedApiKey("abc".into()), "ApiKey abc"),
            (Credentials::Bearer("t0k".into()), "Bearer t0k"),
        ];
        for (credentials, expected) in cases {
            let header = authorization(&credentials).unwrap().unwrap();
            assert_eq!(header.to_str().unwrap(), expected);
            assert!(header.is_sensitive());
            assert!(!format!("{header:?}").contains(expected));
        }
        let e = authorization(&Credentials::Bearer("a\nb".into())).unwrap_err();
        assert!(e.to_string().contains("bearer_token"), "{e}");
        assert!(!e.to_string().contains("a\nb"));
    }

    #[test]
    fn a_bulk_body_goes_out_as_its_buffers_in_order_with_its_exact_length() {
        use http_body::Body as _;
        let mut body = SharedBody::from(Bytes::from_static(b"{\"create\":{}}\n"));
        body.push(Bytes::from_static(b"{\"a\":1}\n"));
        let mut http = SegmentsBody::new(body);
        assert_eq!(http.size_hint().exact(), Some(22));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut frames = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut http).poll_frame(&mut cx) {
            frames.push(frame.unwrap().into_data().unwrap());
            assert_eq!(
                http.size_hint().exact(),
                Some(22 - frames.iter().map(|f| f.len() as u64).sum::<u64>())
            );
        }
        assert_eq!(frames, [&b"{\"create\":{}}\n"[..], &b"{\"a\":1}\n"[..]]);
        assert!(http.is_end_stream());
    }
}
