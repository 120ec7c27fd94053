//! Shared Access Signatures for tests, signed with Azurite's published account key the way
//! Microsoft's "Create a service SAS" page describes (versions 2020-12-06 and later).
use super::servers::Azurite;

/// HMAC-SHA256 of `to_sign` with the Azurite account key, base64.
pub fn sign(to_sign: &str) -> String {
    let key = azure_core::credentials::Secret::new(Azurite::ACCOUNT_KEY);
    azure_core::hmac::hmac_sha256(to_sign, &key).expect("hmac")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A service SAS (`sr=c`) for `container` with `permissions` (e.g. `rl`): the query string
/// and, separately, its raw signature (to check it never shows up in output).
pub fn service_sas(container: &str, permissions: &str) -> (String, String) {
    let (sv, st, se) = ("2022-11-02", "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let resource = format!("/blob/{}/{container}", Azurite::ACCOUNT);
    let to_sign = [
        permissions,
        st,
        se,
        &resource,
        "",
        "",
        "https,http",
        sv,
        "c",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let sig = sign(&to_sign);
    let query = format!(
        "sv={sv}&st={}&se={}&sr=c&sp={permissions}&spr=https,http&sig={}",
        enc(st),
        enc(se),
        enc(&sig)
    );
    (query, sig)
}
