//! The storage part of a `[[source]]` table as the configuration file states it: account,
//! endpoint, container, `[source.auth]` and `[source.retry]` (types and defaults only; secrets
//! are read and credentials built by `source::credential`).
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

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
