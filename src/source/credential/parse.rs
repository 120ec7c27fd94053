//! Parsers of the storage settings whose text carries structure: connection strings, endpoint
//! URLs, SAS tokens and URLs, account names. Errors never quote a secret value.
use super::CredentialError;
use crate::secret::Secret;
use azure_core::http::Url;

/// The parts of a storage connection string flowlogd uses.
#[derive(Debug, Default)]
pub(super) struct ConnectionString {
    pub(super) protocol: Option<String>,
    pub(super) account_name: Option<String>,
    pub(super) account_key: Option<Secret>,
    pub(super) endpoint_suffix: Option<String>,
    pub(super) blob_endpoint: Option<String>,
    pub(super) sas: Option<Secret>,
    pub(super) use_development_storage: bool,
}

impl ConnectionString {
    /// Parses `Key=Value;Key=Value;…`. Keys are case-insensitive; values may contain `=`
    /// (base64 padding, SAS queries). Errors never quote a value.
    pub(super) fn parse(raw: &Secret) -> Result<Self, CredentialError> {
        const FIELD: &str = "auth.connection_string";
        let mut cs = ConnectionString::default();
        for (i, part) in raw.expose().split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(CredentialError::new(
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
                    return Err(CredentialError::new(
                        FIELD,
                        format!("unknown key `{other}` in segment {}", i + 1),
                    ));
                }
            }
        }
        if let Some(name) = &cs.account_name {
            validate_account(name).map_err(|e| CredentialError::new(FIELD, e.reason))?;
        }
        Ok(cs)
    }
}

pub(super) fn validate_account(account: &str) -> Result<(), CredentialError> {
    if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CredentialError::new(
            "account",
            format!("`{account}` is not a storage account name (letters and digits only)"),
        ));
    }
    Ok(())
}

/// Parses an endpoint URL and normalises it to end in `/` with no query or fragment.
pub(super) fn parse_endpoint(field: &str, raw: &str) -> Result<Url, CredentialError> {
    let mut url = Url::parse(raw.trim())
        .map_err(|e| CredentialError::new(field, format!("not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(CredentialError::new(field, "must be an http or https URL"));
    }
    if url.query().is_some() {
        return Err(CredentialError::new(
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
pub(super) fn parse_sas(
    field: &str,
    raw: &Secret,
) -> Result<(Option<Url>, Secret), CredentialError> {
    let text = raw.expose().trim();
    let (base, token) = if text.starts_with("https://") || text.starts_with("http://") {
        let mut url = Url::parse(text)
            .map_err(|e| CredentialError::new(field, format!("SAS URL is not a URL: {e}")))?;
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
        return Err(CredentialError::new(
            field,
            "does not look like a SAS token (no `sig` parameter)",
        ));
    }
    Ok((base, Secret::new(token)))
}
