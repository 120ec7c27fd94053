//! Storage account and credential configuration of a source, and its resolution at startup.
//!
//! [`StorageConfig`] is what a `[[source]]` table says about where its blobs live and how to
//! authenticate; [`StorageConfig::resolve`] turns it into a [`ResolvedStorage`]: a blob
//! endpoint URL, a container and a ready [`Credential`]. All secrets are read there (inline,
//! from an environment variable or from a file) and kept in [`Secret`]; errors name the field
//! and the variable or file, never the value.
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

use crate::secret::Secret;
use azure_core::{
    cloud::CloudConfiguration,
    credentials::TokenCredential,
    http::{ClientOptions, Url},
};
use serde::Deserialize;
use std::{fmt, path::PathBuf, sync::Arc};

/// Endpoint suffix of the Azure public cloud.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";
/// Endpoint suffix of Azure US Government.
pub const US_GOV_ENDPOINT_SUFFIX: &str = "core.usgovcloudapi.net";
/// Endpoint suffix of Azure China (21Vianet).
pub const CHINA_ENDPOINT_SUFFIX: &str = "core.chinacloudapi.cn";
/// Azurite's (and the classic storage emulator's) fixed account name.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published, well-known account key (not a secret).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint, used by `UseDevelopmentStorage=true`.
pub const AZURITE_BLOB_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// Retries of failed storage requests (`[source.retry]`).
///
/// Retried: HTTP 408, 429, 500, 502, 503, 504 (throttling shows as 503 ServerBusy or 500
/// OperationTimedOut), connection failures, resets and timeouts (20 s to connect, 60 s
/// between reads). Delays grow exponentially from `initial_delay_ms`, each with 0–255 ms of
/// random jitter, capped at `max_delay_ms`; a `Retry-After` from the server is honoured.
/// What still fails is reported with the blob and reason, and tried again on a later poll.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per request, the first one included; 1 disables retries. Default: 4.
    pub max_tries: u32,
    /// Delay before the first retry, in milliseconds; doubled for each further retry.
    /// Default: 500.
    pub initial_delay_ms: u64,
    /// Longest single delay, in milliseconds (the SDK never goes below 1000). Default: 8000.
    pub max_delay_ms: u64,
    /// No retry starts later than this many seconds after the first try. Default: 30.
    pub max_elapsed_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_tries: 4,
            initial_delay_ms: 500,
            max_delay_ms: 8_000,
            max_elapsed_secs: 30,
        }
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_tries == 0 {
            return Err(ConfigError {
                field: "retry.max_tries".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn default_endpoint_suffix() -> String {
    DEFAULT_ENDPOINT_SUFFIX.to_owned()
}

/// Where a source's blobs live and how to authenticate (the storage part of `[[source]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage account name. Default: none; required unless `blob_endpoint`, a connection
    /// string or a SAS URL gives the endpoint (with `account_key` it is also what is signed,
    /// and is then taken from the endpoint when not set).
    #[serde(default)]
    pub account: Option<String>,
    /// DNS suffix of the cloud: `core.windows.net` (default, public),
    /// `core.usgovcloudapi.net` (US Government), `core.chinacloudapi.cn` (China). The blob
    /// endpoint is `https://<account>.blob.<endpoint_suffix>/`; for Entra ID methods it also
    /// selects the cloud's login authority.
    #[serde(default = "default_endpoint_suffix")]
    pub endpoint_suffix: String,
    /// Explicit blob service URL, overriding the one built from `account` and
    /// `endpoint_suffix` (and any endpoint in a connection string or SAS URL). For Azurite
    /// (`http://127.0.0.1:10000/devstoreaccount1`) and private endpoints. Default: none.
    #[serde(default)]
    pub blob_endpoint: Option<String>,
    /// Container holding the flow logs, e.g. `insights-logs-networksecuritygroupflowevent`
    /// (NSG flow logs) or `insights-logs-flowlogflowevent` (VNet flow logs). Required.
    pub container: String,
    /// Credentials (`[source.auth]`, with `method = …`). Required.
    pub auth: AuthConfig,
    /// Retries of failed storage requests (`[source.retry]`). Default: see [`RetryConfig`].
    #[serde(default)]
    pub retry: RetryConfig,
}

/// How to authenticate against the storage account (`[source.auth]`).
///
/// Every secret field can be given inline (`account_key = "…"`), from an environment
/// variable (`account_key_env = "VAR"`) or from a file (`account_key_file = "/path"`, for
/// systemd `LoadCredential=` or Kubernetes secrets; one trailing newline is removed).
/// Exactly one of the three forms must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// Shared Key with the storage account key.
    AccountKey {
        /// The base64 account key, inline. Default: none.
        #[serde(default)]
        account_key: Option<Secret>,
        /// Environment variable holding the account key. Default: none.
        #[serde(default)]
        account_key_env: Option<String>,
        /// File holding the account key. Default: none.
        #[serde(default)]
        account_key_file: Option<PathBuf>,
    },
    /// A storage connection string (as shown under "Access keys" in the portal).
    ConnectionString {
        /// The connection string, inline. Default: none.
        #[serde(default)]
        connection_string: Option<Secret>,
        /// Environment variable holding the connection string (e.g.
        /// `AZURE_STORAGE_CONNECTION_STRING`). Default: none.
        #[serde(default)]
        connection_string_env: Option<String>,
        /// File holding the connection string. Default: none.
        #[serde(default)]
        connection_string_file: Option<PathBuf>,
    },
    /// A shared access signature: a token (`sv=…&sig=…`, with or without the leading `?`)
    /// or a full SAS URL (`https://acct.blob.core.windows.net/container?sv=…`). The SAS needs
    /// read and list permissions on the container.
    Sas {
        /// The SAS token or URL, inline. Default: none.
        #[serde(default)]
        sas_token: Option<Secret>,
        /// Environment variable holding the SAS token or URL. Default: none.
        #[serde(default)]
        sas_token_env: Option<String>,
        /// File holding the SAS token or URL. Default: none.
        #[serde(default)]
        sas_token_file: Option<PathBuf>,
    },
    /// Entra ID service principal with a client secret (needs an https endpoint and the
    /// Storage Blob Data Reader role on the container or account).
    ClientSecret {
        /// Directory (tenant) id. Required.
        tenant_id: String,
        /// Application (client) id. Required.
        client_id: String,
        /// The client secret, inline. Default: none.
        #[serde(default)]
        client_secret: Option<Secret>,
        /// Environment variable holding the client secret. Default: none.
        #[serde(default)]
        client_secret_env: Option<String>,
        /// File holding the client secret. Default: none.
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
    },
    /// Managed identity of the VM, VM scale set, App Service or container (needs https).
    /// System-assigned unless one of the user-assigned ids below is set.
    ManagedIdentity {
        /// Client id of a user-assigned identity. Default: none.
        #[serde(default)]
        client_id: Option<String>,
        /// Object (principal) id of a user-assigned identity. Default: none.
        #[serde(default)]
        object_id: Option<String>,
        /// ARM resource id of a user-assigned identity. Default: none.
        #[serde(default)]
        resource_id: Option<String>,
    },
    /// AKS workload identity (federated service-account token; needs https). The defaults
    /// come from the variables the AKS webhook injects.
    WorkloadIdentity {
        /// Tenant id. Default: `$AZURE_TENANT_ID`.
        #[serde(default)]
        tenant_id: Option<String>,
        /// Client id. Default: `$AZURE_CLIENT_ID`.
        #[serde(default)]
        client_id: Option<String>,
        /// Path of the projected service-account token. Default: `$AZURE_FEDERATED_TOKEN_FILE`.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// The signed-in Azure CLI (`az login`), then Azure Developer CLI (`azd auth login`):
    /// for local use (needs https).
    AzureCli {},
}

impl AuthConfig {
    /// The `method` name as written in the config.
    pub fn method(&self) -> &'static str {
        match self {
            AuthConfig::AccountKey { .. } => "account_key",
            AuthConfig::ConnectionString { .. } => "connection_string",
            AuthConfig::Sas { .. } => "sas",
            AuthConfig::ClientSecret { .. } => "client_secret",
            AuthConfig::ManagedIdentity { .. } => "managed_identity",
            AuthConfig::WorkloadIdentity { .. } => "workload_identity",
            AuthConfig::AzureCli {} => "azure_cli",
        }
    }
}

/// A storage configuration that cannot be used. Names the field and, for secrets read from
/// the environment or a file, the variable or path; never a secret value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage config `{field}`: {reason}")]
pub struct ConfigError {
    /// The config field at fault, e.g. `auth.account_key_file`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
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
    pub fn resolve(&self) -> Result<ResolvedStorage, ConfigError> {
        self.retry.validate()?;
        if self.container.trim().is_empty() {
            return Err(ConfigError::new("container", "must not be empty"));
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
                        ConfigError::new(
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
                .map_err(|e| ConfigError::new("auth", format!("client_secret credential: {e}")))?;
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
                    return Err(ConfigError::new(
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
                    ConfigError::new("auth", format!("managed_identity credential: {e}"))
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
                        ConfigError::new(
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
                let credential = azure_identity::DeveloperToolsCredential::new(None)
                    .map_err(|e| ConfigError::new("auth", format!("azure_cli credential: {e}")))?;
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

    fn default_endpoint(&self) -> Result<Url, ConfigError> {
        let account = self
            .account
            .as_deref()
            .ok_or_else(|| ConfigError::new("account", "required (or set `blob_endpoint`)"))?;
        let suffix = self.endpoint_suffix.trim().trim_matches('.');
        if suffix.is_empty() {
            return Err(ConfigError::new("endpoint_suffix", "must not be empty"));
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
    ) -> Result<(Url, Credential), ConfigError> {
        let url = match explicit {
            Some(u) => u,
            None => self.default_endpoint()?,
        };
        if url.scheme() != "https" {
            return Err(ConfigError::new(
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
    ) -> Result<(Url, Credential), ConfigError> {
        const FIELD: &str = "auth.connection_string";
        let dev = cs.use_development_storage;
        let account = match (&self.account, &cs.account_name) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::new(
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
            parse_endpoint(FIELD, e).map_err(|e| ConfigError::new(FIELD, e.reason))?
        } else if dev {
            parse_endpoint(FIELD, AZURITE_BLOB_ENDPOINT)?
        } else {
            let account = account.as_deref().ok_or_else(|| {
                ConfigError::new(FIELD, "has neither AccountName nor BlobEndpoint")
            })?;
            let protocol = cs.protocol.as_deref().unwrap_or("https");
            if protocol != "https" && protocol != "http" {
                return Err(ConfigError::new(
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
                return Err(ConfigError::new(
                    FIELD,
                    "has both AccountKey and SharedAccessSignature; keep one",
                ));
            }
            (Some(key), None) => {
                check_base64_key(FIELD, &key)?;
                let account = account
                    .or_else(|| account_from_endpoint(&url))
                    .ok_or_else(|| {
                        ConfigError::new(FIELD, "AccountKey needs AccountName (or set `account`)")
                    })?;
                Credential::SharedKey { account, key }
            }
            (None, Some(sas)) => {
                let (_, token) = parse_sas(FIELD, &sas)?;
                Credential::Sas(token)
            }
            (None, None) => {
                return Err(ConfigError::new(
                    FIELD,
                    "has neither AccountKey nor SharedAccessSignature",
                ));
            }
        };
        Ok((url, credential))
    }
}

/// The parts of a storage connection string flowlogd uses.
#[derive(Debug, Default)]
struct ConnectionString {
    protocol: Option<String>,
    account_name: Option<String>,
    account_key: Option<Secret>,
    endpoint_suffix: Option<String>,
    blob_endpoint: Option<String>,
    sas: Option<Secret>,
    use_development_storage: bool,
}

impl ConnectionString {
    /// Parses `Key=Value;Key=Value;…`. Keys are case-insensitive; values may contain `=`
    /// (base64 padding, SAS queries). Errors never quote a value.
    fn parse(raw: &Secret) -> Result<Self, ConfigError> {
        const FIELD: &str = "auth.connection_string";
        let mut cs = ConnectionString::default();
        for (i, part) in raw.expose().split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(ConfigError::new(
                    FIELD,
                    format!("segment {} is not `Key=Value`", i + 1),
                ));
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "defaultendpointsprotocol" => {
                    cs.protocol = Some(value.to_ascii_lowercase());
                }
                "accountname" => cs.account_name = Some(value.to_owned()),
                "accountkey" => cs.account_key = Some(Secret::new(value)),
                "endpointsuffix" => cs.endpoint_suffix = Some(value.to_owned()),
                "blobendpoint" => cs.blob_endpoint = Some(value.to_owned()),
                "sharedaccesssignature" => cs.sas = Some(Secret::new(value)),
                "usedevelopmentstorage" => {
                    cs.use_development_storage = value.eq_ignore_ascii_case("true");
                }
                // Endpoints of the other services and proxy settings are not used here.
                "queueendpoint"
                | "tableendpoint"
                | "fileendpoint"
                | "dfsendpoint"
                | "developmentstorageproxyuri" => {}
                other => {
                    return Err(ConfigError::new(
                        FIELD,
                        format!("unknown key `{other}` in segment {}", i + 1),
                    ));
                }
            }
        }
        if let Some(name) = &cs.account_name {
            validate_account(name).map_err(|e| ConfigError::new(FIELD, e.reason))?;
        }
        Ok(cs)
    }
}

/// A required secret option (see [`crate::secret::load_secret`]).
fn load_secret(
    field: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Secret, ConfigError> {
    crate::secret::load_secret(field, inline, env, file.map(PathBuf::as_path))
        .map_err(|e| ConfigError::new(e.key, e.reason))?
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("required: set one of `{field}`, `{field}_env` or `{field}_file`"),
            )
        })
}

fn check_base64_key(field: &str, key: &Secret) -> Result<(), ConfigError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key.expose().trim())
        .map(|_| ())
        .map_err(|_| ConfigError::new(field, "the account key is not valid base64"))
}

fn validate_account(account: &str) -> Result<(), ConfigError> {
    if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ConfigError::new(
            "account",
            format!("`{account}` is not a storage account name (letters and digits only)"),
        ));
    }
    Ok(())
}

/// Parses an endpoint URL and normalises it to end in `/` with no query or fragment.
fn parse_endpoint(field: &str, raw: &str) -> Result<Url, ConfigError> {
    let mut url =
        Url::parse(raw.trim()).map_err(|e| ConfigError::new(field, format!("not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ConfigError::new(field, "must be an http or https URL"));
    }
    if url.query().is_some() {
        return Err(ConfigError::new(
            field,
            "must not carry a query (put SAS tokens in `[source.auth]` with method = \"sas\")",
        ));
    }
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Splits a SAS token or SAS URL into (endpoint without query, token without `?`).
fn parse_sas(field: &str, raw: &Secret) -> Result<(Option<Url>, Secret), ConfigError> {
    let text = raw.expose().trim();
    let (base, token) = if text.starts_with("https://") || text.starts_with("http://") {
        let mut url = Url::parse(text)
            .map_err(|e| ConfigError::new(field, format!("SAS URL is not a URL: {e}")))?;
        let token = url.query().unwrap_or("").to_owned();
        url.set_query(None);
        url.set_fragment(None);
        (Some(url), token)
    } else {
        (None, text.trim_start_matches('?').to_owned())
    };
    let has_sig = token
        .split('&')
        .any(|pair| pair.split('=').next() == Some("sig"));
    if !has_sig {
        return Err(ConfigError::new(
            field,
            "does not look like a SAS token (no `sig` parameter)",
        ));
    }
    Ok((base, Secret::new(token)))
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

    fn resolve(toml: &str) -> Result<ResolvedStorage, ConfigError> {
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
