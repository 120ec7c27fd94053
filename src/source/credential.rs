//! Resolution of a source's storage configuration at startup: secrets loaded (inline, from an
//! environment variable or a file), the blob endpoint worked out, and a ready [`Credential`]
//! built. Errors name the field and the variable or file, never a secret value.
//!
//! Methods (`[source.auth] method = …`):
//! - `account_key`: Shared Key signing with the storage account key.
//! - `connection_string`: `DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…;EndpointSuffix=…`,
//!   optionally `BlobEndpoint=…`, or `SharedAccessSignature=…` instead of the key, or
//!   `UseDevelopmentStorage=true` (Azurite's well-known account).
//! - `sas`: a SAS token (with or without the leading `?`) or a full SAS URL.
//! - `client_secret`, `managed_identity`, `workload_identity`, `azure_cli`: Microsoft Entra ID.
//!   The SDK refuses to send bearer tokens over plain http, so these need an `https` endpoint;
//!   resolution fails with a config error otherwise.
mod parse;

use crate::config::storage::{
    AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, AZURITE_BLOB_ENDPOINT, AuthConfig, CHINA_ENDPOINT_SUFFIX,
    RetryConfig, StorageConfig, US_GOV_ENDPOINT_SUFFIX,
};
use crate::secret::Secret;
use azure_core::{
    cloud::CloudConfiguration,
    credentials::TokenCredential,
    http::{ClientOptions, Url},
};
use parse::{ConnectionString, parse_endpoint, parse_sas, validate_account};
use std::{fmt, path::PathBuf, sync::Arc};

/// A storage configuration that cannot be used. Names the field and, for secrets read from
/// the environment or a file, the variable or path; never a secret value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage config `{field}`: {reason}")]
pub struct CredentialError {
    /// The config field at fault, e.g. `auth.account_key_file`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CredentialError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A ready credential for the storage account.
#[derive(Clone)]
pub enum Credential {
    /// Shared Key signing with the account key.
    SharedKey {
        /// Account name (signed into every request).
        account: String,
        /// Base64 account key.
        key: Secret,
    },
    /// A SAS token, without the leading `?`, appended to every request URL.
    Sas(Secret),
    /// An Entra ID token credential; `kind` is the config method, for logs.
    Entra {
        /// The config method name, e.g. `managed_identity`.
        kind: &'static str,
        /// The azure_identity credential.
        credential: Arc<dyn TokenCredential>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::SharedKey { account, key } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .field("key", key)
                .finish(),
            Credential::Sas(token) => f.debug_tuple("Sas").field(token).finish(),
            Credential::Entra { kind, .. } => f.debug_struct("Entra").field("kind", kind).finish(),
        }
    }
}

/// A [`StorageConfig`] with its endpoint worked out and its secrets loaded.
#[derive(Debug, Clone)]
pub struct ResolvedStorage {
    /// Blob service URL, ending in `/`, without query (e.g. `https://acct.blob.core.windows.net/`
    /// or `http://127.0.0.1:10000/devstoreaccount1/`).
    pub service_url: Url,
    /// Container name.
    pub container: String,
    /// The credential.
    pub credential: Credential,
    /// Retry settings.
    pub retry: RetryConfig,
}

impl ResolvedStorage {
    /// Container URL as requests use it: with the SAS token as query when the credential is
    /// a SAS. Never log it (use [`ResolvedStorage::container_url_for_display`]).
    pub fn container_url(&self) -> Url {
        let mut url = self.container_url_for_display();
        if let Credential::Sas(token) = &self.credential {
            url.set_query(Some(token.expose()));
        }
        url
    }

    /// Container URL without any SAS token: safe for logs and errors.
    pub fn container_url_for_display(&self) -> Url {
        let mut url = self.service_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.container);
        }
        url
    }
}

impl StorageConfig {
    /// Loads the secrets and builds the endpoint and credential. Called once at startup.
    pub fn resolve(&self) -> Result<ResolvedStorage, CredentialError> {
        if self.retry.max_tries == 0 {
            return Err(CredentialError::new(
                "retry.max_tries",
                "must be at least 1",
            ));
        }
        if self.container.trim().is_empty() {
            return Err(CredentialError::new("container", "must not be empty"));
        }
        if let Some(account) = &self.account {
            validate_account(account)?;
        }
        let explicit = match &self.blob_endpoint {
            Some(e) => Some(parse_endpoint("blob_endpoint", e)?),
            None => None,
        };
        let cloud = cloud_for_suffix(&self.endpoint_suffix);
        let entra_options = ClientOptions {
            cloud: Some(Arc::new(cloud)),
            ..Default::default()
        };

        let (service_url, credential) = match &self.auth {
            AuthConfig::AccountKey {
                account_key,
                account_key_env,
                account_key_file,
            } => {
                let key = load_secret(
                    "auth.account_key",
                    account_key.as_ref(),
                    account_key_env.as_deref(),
                    account_key_file.as_ref(),
                )?;
                check_base64_key("auth.account_key", &key)?;
                let url = match explicit {
                    Some(u) => u,
                    None => self.default_endpoint()?,
                };
                let account = match &self.account {
                    Some(a) => a.clone(),
                    None => account_from_endpoint(&url).ok_or_else(|| {
                        CredentialError::new(
                            "account",
                            "required with `account_key` when it cannot be read from `blob_endpoint`",
                        )
                    })?,
                };
                (url, Credential::SharedKey { account, key })
            }
            AuthConfig::ConnectionString {
                connection_string,
                connection_string_env,
                connection_string_file,
            } => {
                let raw = load_secret(
                    "auth.connection_string",
                    connection_string.as_ref(),
                    connection_string_env.as_deref(),
                    connection_string_file.as_ref(),
                )?;
                let cs = ConnectionString::parse(&raw)?;
                self.resolve_connection_string(cs, explicit)?
            }
            AuthConfig::Sas {
                sas_token,
                sas_token_env,
                sas_token_file,
            } => {
                let raw = load_secret(
                    "auth.sas_token",
                    sas_token.as_ref(),
                    sas_token_env.as_deref(),
                    sas_token_file.as_ref(),
                )?;
                let (sas_base, token) = parse_sas("auth.sas_token", &raw)?;
                let url = match (explicit, sas_base) {
                    (Some(u), _) => u,
                    (None, Some(base)) => strip_container(base, &self.container),
                    (None, None) => self.default_endpoint()?,
                };
                (url, Credential::Sas(token))
            }
            AuthConfig::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
                client_secret_env,
                client_secret_file,
            } => {
                let secret = load_secret(
                    "auth.client_secret",
                    client_secret.as_ref(),
                    client_secret_env.as_deref(),
                    client_secret_file.as_ref(),
                )?;
                let credential = azure_identity::ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    azure_core::credentials::Secret::new(secret.expose().to_owned()),
                    Some(azure_identity::ClientSecretCredentialOptions {
                        client_options: entra_options,
                    }),
                )
                .map_err(|e| {
                    CredentialError::new("auth", format!("client_secret credential: {e}"))
                })?;
                self.entra(explicit, "client_secret", credential)?
            }
            AuthConfig::ManagedIdentity {
                client_id,
                object_id,
                resource_id,
            } => {
                use azure_identity::UserAssignedId;
                let ids = [
                    client_id.clone().map(UserAssignedId::ClientId),
                    object_id.clone().map(UserAssignedId::ObjectId),
                    resource_id.clone().map(UserAssignedId::ResourceId),
                ];
                let mut set = ids.into_iter().flatten();
                let user_assigned_id = set.next();
                if set.next().is_some() {
                    return Err(CredentialError::new(
                        "auth",
                        "set at most one of `client_id`, `object_id`, `resource_id` for a managed identity",
                    ));
                }
                let credential = azure_identity::ManagedIdentityCredential::new(Some(
                    azure_identity::ManagedIdentityCredentialOptions {
                        user_assigned_id,
                        client_options: entra_options,
                    },
                ))
                .map_err(|e| {
                    CredentialError::new("auth", format!("managed_identity credential: {e}"))
                })?;
                self.entra(explicit, "managed_identity", credential)?
            }
            AuthConfig::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                let mut options = azure_identity::WorkloadIdentityCredentialOptions {
                    client_id: client_id.clone(),
                    tenant_id: tenant_id.clone(),
                    token_file_path: token_file.clone(),
                    ..Default::default()
                };
                options.credential_options.client_options = entra_options;
                let credential = azure_identity::WorkloadIdentityCredential::new(Some(options))
                    .map_err(|e| {
                        CredentialError::new(
                            "auth",
                            format!(
                                "workload_identity credential: {e} (set tenant_id/client_id/token_file or \
                                 AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_FEDERATED_TOKEN_FILE)"
                            ),
                        )
                    })?;
                self.entra(explicit, "workload_identity", credential)?
            }
            AuthConfig::AzureCli {} => {
                let credential =
                    azure_identity::DeveloperToolsCredential::new(None).map_err(|e| {
                        CredentialError::new("auth", format!("azure_cli credential: {e}"))
                    })?;
                self.entra(explicit, "azure_cli", credential)?
            }
        };

        Ok(ResolvedStorage {
            service_url,
            container: self.container.clone(),
            credential,
            retry: self.retry.clone(),
        })
    }

    fn default_endpoint(&self) -> Result<Url, CredentialError> {
        let account = self
            .account
            .as_deref()
            .ok_or_else(|| CredentialError::new("account", "required (or set `blob_endpoint`)"))?;
        let suffix = self.endpoint_suffix.trim().trim_matches('.');
        if suffix.is_empty() {
            return Err(CredentialError::new("endpoint_suffix", "must not be empty"));
        }
        parse_endpoint(
            "endpoint_suffix",
            &format!("https://{account}.blob.{suffix}/"),
        )
    }

    fn entra<C: TokenCredential + 'static>(
        &self,
        explicit: Option<Url>,
        kind: &'static str,
        credential: Arc<C>,
    ) -> Result<(Url, Credential), CredentialError> {
        let url = match explicit {
            Some(u) => u,
            None => self.default_endpoint()?,
        };
        if url.scheme() != "https" {
            return Err(CredentialError::new(
                "blob_endpoint",
                format!(
                    "`auth.method = \"{kind}\"` needs an https endpoint, got {url}: the Azure SDK \
                     refuses to send Entra ID bearer tokens over plain http"
                ),
            ));
        }
        Ok((url, Credential::Entra { kind, credential }))
    }

    fn resolve_connection_string(
        &self,
        cs: ConnectionString,
        explicit: Option<Url>,
    ) -> Result<(Url, Credential), CredentialError> {
        const FIELD: &str = "auth.connection_string";
        let dev = cs.use_development_storage;
        let account = match (&self.account, &cs.account_name) {
            (Some(a), Some(b)) if a != b => {
                return Err(CredentialError::new(
                    "account",
                    format!("`{a}` differs from AccountName `{b}` in the connection string"),
                ));
            }
            (_, Some(b)) => Some(b.clone()),
            (Some(a), None) => Some(a.clone()),
            (None, None) if dev => Some(AZURITE_ACCOUNT.to_owned()),
            (None, None) => None,
        };
        let url = if let Some(u) = explicit {
            u
        } else if let Some(e) = &cs.blob_endpoint {
            parse_endpoint(FIELD, e).map_err(|e| CredentialError::new(FIELD, e.reason))?
        } else if dev {
            parse_endpoint(FIELD, AZURITE_BLOB_ENDPOINT)?
        } else {
            let account = account.as_deref().ok_or_else(|| {
                CredentialError::new(FIELD, "has neither AccountName nor BlobEndpoint")
            })?;
            let protocol = cs.protocol.as_deref().unwrap_or("https");
            if protocol != "https" && protocol != "http" {
                return Err(CredentialError::new(
                    FIELD,
                    format!("DefaultEndpointsProtocol must be http or https, got `{protocol}`"),
                ));
            }
            let suffix = cs
                .endpoint_suffix
                .as_deref()
                .unwrap_or(&self.endpoint_suffix)
                .trim_matches('.');
            parse_endpoint(FIELD, &format!("{protocol}://{account}.blob.{suffix}/"))?
        };

        let key = match (cs.account_key, dev) {
            (Some(k), _) => Some(k),
            (None, true) if cs.sas.is_none() => Some(Secret::new(AZURITE_ACCOUNT_KEY)),
            (None, _) => None,
        };
        let credential = match (key, cs.sas) {
            (Some(_), Some(_)) => {
                return Err(CredentialError::new(
                    FIELD,
                    "has both AccountKey and SharedAccessSignature; keep one",
                ));
            }
            (Some(key), None) => {
                check_base64_key(FIELD, &key)?;
                let account = account
                    .or_else(|| account_from_endpoint(&url))
                    .ok_or_else(|| {
                        CredentialError::new(
                            FIELD,
                            "AccountKey needs AccountName (or set `account`)",
                        )
                    })?;
                Credential::SharedKey { account, key }
            }
            (None, Some(sas)) => {
                let (_, token) = parse_sas(FIELD, &sas)?;
                Credential::Sas(token)
            }
            (None, None) => {
                return Err(CredentialError::new(
                    FIELD,
                    "has neither AccountKey nor SharedAccessSignature",
                ));
            }
        };
        Ok((url, credential))
    }
}

/// A required secret option (see [`crate::secret::load_secret`]).
fn load_secret(
    field: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Secret, CredentialError> {
    crate::secret::load_secret(field, inline, env, file.map(PathBuf::as_path))
        .map_err(|e| CredentialError::new(e.key, e.reason))?
        .ok_or_else(|| {
            CredentialError::new(
                field,
                format!("required: set one of `{field}`, `{field}_env` or `{field}_file`"),
            )
        })
}

fn check_base64_key(field: &str, key: &Secret) -> Result<(), CredentialError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key.expose().trim())
        .map(|_| ())
        .map_err(|_| CredentialError::new(field, "the account key is not valid base64"))
}

/// Turns a SAS URL's base into the service URL: drops a trailing container segment.
fn strip_container(mut url: Url, container: &str) -> Url {
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let keep = match segments.last() {
        Some(last) if last == container => &segments[..segments.len() - 1],
        _ => &segments[..],
    };
    if let Ok(mut p) = url.path_segments_mut() {
        p.clear();
        p.extend(keep);
        p.push("");
    }
    url
}

/// The account name an endpoint URL implies: `acct` of `acct.blob.<suffix>`, or the first
/// path segment of a path-style (Azurite, IP address) endpoint.
fn account_from_endpoint(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    if let Some((first, rest)) = host.split_once('.')
        && rest.starts_with("blob.")
        && !first.is_empty()
    {
        return Some(first.to_owned());
    }
    let first = url.path_segments()?.find(|s| !s.is_empty())?;
    Some(first.to_owned())
}

fn cloud_for_suffix(suffix: &str) -> CloudConfiguration {
    match suffix.trim().trim_matches('.') {
        US_GOV_ENDPOINT_SUFFIX => CloudConfiguration::AzureGovernment,
        CHINA_ENDPOINT_SUFFIX => CloudConfiguration::AzureChina,
        _ => CloudConfiguration::AzurePublic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::{Figment, providers::Format as _, providers::Toml};

    fn parse(toml: &str) -> Result<StorageConfig, Box<figment::Error>> {
        Figment::from(Toml::string(toml))
            .extract()
            .map_err(Box::new)
    }

    fn resolve(toml: &str) -> Result<ResolvedStorage, CredentialError> {
        parse(toml).expect("config parses").resolve()
    }

    #[test]
    fn account_key_inline_builds_the_public_endpoint() {
        let r = resolve(&format!(
            r#"
            account = "flowlogs01"
            container = "insights-logs-flowlogflowevent"
            [auth]
            method = "account_key"
            account_key = "{AZURITE_ACCOUNT_KEY}"
            "#
        ))
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "https://flowlogs01.blob.core.windows.net/"
        );
        assert_eq!(
            r.container_url().as_str(),
            "https://flowlogs01.blob.core.windows.net/insights-logs-flowlogflowevent"
        );
        assert!(
            matches!(&r.credential, Credential::SharedKey { account, .. } if account == "flowlogs01")
        );
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("Eby8"), "{dbg}");
    }

    #[test]
    fn sovereign_suffix_changes_the_endpoint() {
        let r = resolve(&format!(
            r#"
            account = "gov"
            endpoint_suffix = "core.usgovcloudapi.net"
            container = "c"
            [auth]
            method = "account_key"
            account_key = "{AZURITE_ACCOUNT_KEY}"
            "#
        ))
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "https://gov.blob.core.usgovcloudapi.net/"
        );
    }

    #[test]
    fn secret_from_file_drops_one_trailing_newline_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{AZURITE_ACCOUNT_KEY}\n")).unwrap();
        let toml = format!(
            r#"
            blob_endpoint = "http://127.0.0.1:10000/devstoreaccount1"
            container = "c"
            [auth]
            method = "account_key"
            account_key_file = "{}"
            "#,
            path.display()
        );
        let r = resolve(&toml).unwrap();
        match &r.credential {
            Credential::SharedKey { account, key } => {
                assert_eq!(account, "devstoreaccount1");
                assert_eq!(key.expose(), AZURITE_ACCOUNT_KEY);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.service_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/"
        );

        let missing = toml.replace("/key\"", "/nope\"");
        let err = resolve(&missing).unwrap_err();
        assert_eq!(err.field, "auth.account_key_file");
        assert!(err.to_string().contains("/nope"), "{err}");
    }

    #[test]
    fn secret_from_env_and_its_errors() {
        // Unique names: tests run in parallel threads of one process.
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("FLOWLOGD_TEST_KEY_7F3A", AZURITE_ACCOUNT_KEY) };
        let toml = r#"
            account = "devstoreaccount1"
            container = "c"
            [auth]
            method = "account_key"
            account_key_env = "FLOWLOGD_TEST_KEY_7F3A"
            "#;
        assert!(resolve(toml).is_ok());
        let err = resolve(&toml.replace("7F3A", "UNSET_9C1B")).unwrap_err();
        assert_eq!(err.field, "auth.account_key_env");
        assert!(
            err.to_string().contains("FLOWLOGD_TEST_KEY_UNSET_9C1B"),
            "{err}"
        );
    }

    #[test]
    fn exactly_one_secret_form() {
        let none = resolve(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "account_key"
            "#,
        )
        .unwrap_err();
        assert_eq!(none.field, "auth.account_key");
        let two = resolve(&format!(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "account_key"
            account_key = "{AZURITE_ACCOUNT_KEY}"
            account_key_env = "X"
            "#
        ))
        .unwrap_err();
        assert!(two.reason.contains("only one"), "{two}");
    }

    #[test]
    fn unknown_fields_and_methods_are_rejected() {
        let typo = parse(
            r#"
            account = "a"
            container = "c"
            acount_key = "x"
            [auth]
            method = "azure_cli"
            "#,
        )
        .unwrap_err();
        assert!(typo.to_string().contains("acount_key"), "{typo}");
        let foreign = parse(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "account_key"
            account_key = "x"
            client_id = "y"
            "#,
        )
        .unwrap_err();
        assert!(foreign.to_string().contains("client_id"), "{foreign}");
        let method = parse(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "shared_key"
            "#,
        )
        .unwrap_err();
        assert!(method.to_string().contains("shared_key"), "{method}");
    }

    #[test]
    fn connection_string_full_form() {
        let r = resolve(&format!(
            r#"
            container = "c"
            [auth]
            method = "connection_string"
            connection_string = "DefaultEndpointsProtocol=https;AccountName=prodlogs;AccountKey={AZURITE_ACCOUNT_KEY};EndpointSuffix=core.chinacloudapi.cn"
            "#
        ))
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "https://prodlogs.blob.core.chinacloudapi.cn/"
        );
        assert!(
            matches!(&r.credential, Credential::SharedKey { account, key }
            if account == "prodlogs" && key.expose() == AZURITE_ACCOUNT_KEY)
        );
    }

    #[test]
    fn connection_string_development_storage() {
        let r = resolve(
            r#"
            container = "c"
            [auth]
            method = "connection_string"
            connection_string = "UseDevelopmentStorage=true"
            "#,
        )
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/"
        );
        assert!(
            matches!(&r.credential, Credential::SharedKey { account, .. } if account == AZURITE_ACCOUNT)
        );

        let r = resolve(
            r#"
            container = "c"
            [auth]
            method = "connection_string"
            connection_string = "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1;"
            "#,
        )
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "http://127.0.0.1:41234/devstoreaccount1/"
        );
    }

    #[test]
    fn connection_string_with_sas_and_errors_never_quote_values() {
        let r = resolve(
            r#"
            container = "c"
            [auth]
            method = "connection_string"
            connection_string = "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sp=rl&sig=abc%2Bdef%3D"
            "#,
        )
        .unwrap();
        assert!(
            matches!(&r.credential, Credential::Sas(t) if t.expose() == "sv=2022-11-02&sp=rl&sig=abc%2Bdef%3D")
        );
        assert_eq!(
            r.container_url().as_str(),
            "https://a.blob.core.windows.net/c?sv=2022-11-02&sp=rl&sig=abc%2Bdef%3D"
        );
        assert_eq!(
            r.container_url_for_display().as_str(),
            "https://a.blob.core.windows.net/c"
        );

        let err = resolve(
            r#"
            container = "c"
            [auth]
            method = "connection_string"
            connection_string = "AccountName=a;AccountKey=c2VjcmV0LXZhbHVl;Bogus"
            "#,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        assert!(err.to_string().contains("segment 3"), "{err}");
    }

    #[test]
    fn sas_token_and_sas_url() {
        let r = resolve(
            r#"
            account = "a"
            container = "logs"
            [auth]
            method = "sas"
            sas_token = "?sv=2022-11-02&sp=rl&sig=xyz"
            "#,
        )
        .unwrap();
        assert_eq!(
            r.container_url().as_str(),
            "https://a.blob.core.windows.net/logs?sv=2022-11-02&sp=rl&sig=xyz"
        );
        let r = resolve(
            r#"
            container = "logs"
            [auth]
            method = "sas"
            sas_token = "http://127.0.0.1:10000/devstoreaccount1/logs?sv=2022-11-02&sr=c&sp=rl&sig=xyz"
            "#,
        )
        .unwrap();
        assert_eq!(
            r.service_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/"
        );
        assert_eq!(
            r.container_url().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/logs?sv=2022-11-02&sr=c&sp=rl&sig=xyz"
        );
        let err = resolve(
            r#"
            account = "a"
            container = "logs"
            [auth]
            method = "sas"
            sas_token = "sv=2022-11-02&sp=rl"
            "#,
        )
        .unwrap_err();
        assert!(err.reason.contains("sig"), "{err}");
    }

    #[test]
    fn entra_methods_need_https() {
        let err = resolve(
            r#"
            blob_endpoint = "http://127.0.0.1:10000/devstoreaccount1"
            container = "c"
            [auth]
            method = "managed_identity"
            "#,
        )
        .unwrap_err();
        assert_eq!(err.field, "blob_endpoint");
        assert!(err.reason.contains("https"), "{err}");

        let r = resolve(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "client_secret"
            tenant_id = "00000000-0000-0000-0000-000000000001"
            client_id = "00000000-0000-0000-0000-000000000002"
            client_secret = "not-a-real-secret"
            "#,
        )
        .unwrap();
        assert!(matches!(
            r.credential,
            Credential::Entra {
                kind: "client_secret",
                ..
            }
        ));
        assert!(!format!("{r:?}").contains("not-a-real-secret"));

        let two_ids = resolve(
            r#"
            account = "a"
            container = "c"
            [auth]
            method = "managed_identity"
            client_id = "x"
            object_id = "y"
            "#,
        )
        .unwrap_err();
        assert!(two_ids.reason.contains("at most one"), "{two_ids}");
    }

    #[test]
    fn account_is_read_from_endpoints() {
        let u = Url::parse("https://acct.blob.core.windows.net/").unwrap();
        assert_eq!(account_from_endpoint(&u).as_deref(), Some("acct"));
        let u = Url::parse("http://127.0.0.1:10000/devstoreaccount1/").unwrap();
        assert_eq!(
            account_from_endpoint(&u).as_deref(),
            Some("devstoreaccount1")
        );
    }
}
