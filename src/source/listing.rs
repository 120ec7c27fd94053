//! Hierarchical blob listing (`delimiter=/`), which `azure_storage_blob` 1.1 lacks.
//!
//! Upstream dropped `delimiter`/`BlobPrefix` support before 1.0 (Azure/azure-sdk-for-rust#4455).
//! This module sends the List Blobs request itself through the same `azure_core` pipeline
//! (so the same Shared Key / SAS / bearer-token policies, retries and counters apply) and
//! parses the `EnumerationResults` page with a small serde model in which `Blob` and
//! `BlobPrefix` entries interleave. It is self-contained so it can be deleted once the SDK
//! ships hierarchical listing.

use azure_core::{
    error::CheckSuccessOptions,
    http::{Context, Method, Pipeline, PipelineSendOptions, Request, Url, UrlExt as _},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// One blob as a listing or a properties call describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobItem {
    /// Full blob name (path inside the container).
    pub name: String,
    /// Length in bytes.
    pub content_length: u64,
    /// ETag without surrounding quotes (listings give it bare, headers quoted).
    pub etag: String,
    /// Last-Modified time.
    pub last_modified: DateTime<Utc>,
}

/// One page of a List Blobs response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// `BlobPrefix` entries ("sub-folders"), each ending in the delimiter.
    pub prefixes: Vec<String>,
    /// `Blob` entries.
    pub blobs: Vec<BlobItem>,
    /// Continuation marker; `None` on the last page.
    pub next_marker: Option<String>,
}

/// Strips quotes (and a weak `W/` prefix) so ETags from headers and listings compare equal.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Requests one page of `GET <container>?restype=container&comp=list` with `prefix`, an
/// optional `delimiter` and `marker`. `container_url` may carry a SAS query.
pub async fn list_page(
    pipeline: &Pipeline,
    container_url: &Url,
    api_version: &str,
    prefix: &str,
    delimiter: Option<&str>,
    marker: Option<&str>,
    max_results: Option<u32>,
) -> azure_core::Result<ListPage> {
    let mut url = container_url.clone();
    {
        let mut q = url.query_builder();
        q.set_pair("restype", "container").set_pair("comp", "list");
        if !prefix.is_empty() {
            q.set_pair("prefix", prefix);
        }
        if let Some(d) = delimiter {
            q.set_pair("delimiter", d);
        }
        if let Some(m) = marker {
            q.set_pair("marker", m);
        }
        if let Some(n) = max_results {
            q.set_pair("maxresults", n.to_string());
        }
        q.build();
    }
    let mut request = Request::new(url, Method::Get);
    request.insert_header("accept", "application/xml");
    request.insert_header("x-ms-version", api_version.to_owned());
    let response = pipeline
        .send(
            &Context::new(),
            &mut request,
            Some(PipelineSendOptions {
                check_success: CheckSuccessOptions {
                    success_codes: &[200],
                },
                ..Default::default()
            }),
        )
        .await?;
    parse_list_page(response.body())
}

/// Parses an `EnumerationResults` document of List Blobs (flat or hierarchical).
pub fn parse_list_page(xml: &[u8]) -> azure_core::Result<ListPage> {
    let doc: EnumerationResults = azure_core::xml::from_xml(encode_blank_names(xml).as_ref())?;
    let mut page = ListPage {
        next_marker: doc.next_marker.filter(|m| !m.is_empty()),
        ..Default::default()
    };
    for entry in doc.blobs.entries {
        match entry {
            Entry::BlobPrefix(p) => page.prefixes.push(p.name.decode()?),
            Entry::Blob(b) => {
                let last_modified = azure_core::time::parse_rfc7231(&b.properties.last_modified)?;
                page.blobs.push(BlobItem {
                    name: b.name.decode()?,
                    content_length: b.properties.content_length,
                    etag: normalize_etag(&b.properties.etag),
                    last_modified: offset_to_chrono(last_modified),
                });
            }
        }
    }
    Ok(page)
}

/// Converts the SDK's `time` timestamps to chrono.
pub(crate) fn offset_to_chrono(t: azure_core::time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

#[derive(Deserialize)]
struct EnumerationResults {
    #[serde(rename = "Blobs", default)]
    blobs: Blobs,
    #[serde(rename = "NextMarker", default)]
    next_marker: Option<String>,
}

#[derive(Deserialize, Default)]
struct Blobs {
    #[serde(rename = "$value", default)]
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
enum Entry {
    Blob(BlobElement),
    BlobPrefix(PrefixElement),
}

#[derive(Deserialize)]
struct BlobElement {
    #[serde(rename = "Name")]
    name: Name,
    #[serde(rename = "Properties")]
    properties: Properties,
}

#[derive(Deserialize)]
struct PrefixElement {
    #[serde(rename = "Name")]
    name: Name,
}

/// `<Name Encoded="true">` holds a percent-encoded name (used for names with characters
/// that XML 1.0 cannot carry).
#[derive(Deserialize)]
struct Name {
    #[serde(rename = "$text", default)]
    text: String,
    #[serde(rename = "@Encoded", default)]
    encoded: Option<bool>,
}

impl Name {
    fn decode(self) -> azure_core::Result<String> {
        if self.encoded != Some(true) {
            return Ok(self.text);
        }
        percent_decode(&self.text).ok_or_else(|| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::DataConversion,
                "listing holds an Encoded blob name that is not valid percent-encoded UTF-8",
            )
        })
    }
}

#[derive(Deserialize)]
struct Properties {
    #[serde(rename = "Content-Length")]
    content_length: u64,
    #[serde(rename = "Etag")]
    etag: String,
    #[serde(rename = "Last-Modified")]
    last_modified: String,
}

/// The page with every `<Name>` made only of XML whitespace rewritten as its percent-encoded
/// form (`<Name Encoded="true">%20</Name>`): quick-xml's deserializer drops a text node that
/// is only whitespace, so a blob named `" "` would be listed as `""` (fuzz finding 5). Pages
/// without such a name, i.e. every page Azure writes for flow logs, are returned as they are.
fn encode_blank_names(xml: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const OPEN: &[u8] = b"<Name>";
    const CLOSE: &[u8] = b"</Name>";
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(at) = find(&xml[search..], OPEN).map(|i| search + i) {
        let content_start = at + OPEN.len();
        let Some(content_end) = find(&xml[content_start..], CLOSE).map(|i| content_start + i)
        else {
            break;
        };
        search = content_end + CLOSE.len();
        let Some(blank) = blank_text(&xml[content_start..content_end]) else {
            continue;
        };
        let out = out.get_or_insert_with(|| Vec::with_capacity(xml.len() + 64));
        out.extend_from_slice(&xml[copied..at]);
        out.extend_from_slice(b"<Name Encoded=\"true\">");
        for c in blank {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
        out.extend_from_slice(CLOSE);
        copied = search;
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&xml[copied..]);
            std::borrow::Cow::Owned(out)
        }
        None => std::borrow::Cow::Borrowed(xml),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The characters of `text` (element content) when it is non-empty and only XML whitespace,
/// written literally or as character references; `None` otherwise. Literal line ends are
/// normalized as an XML parser does (CR LF and lone CR become LF); references are not.
fn blank_text(text: &[u8]) -> Option<Vec<u8>> {
    let mut chars = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b' ' | b'\t' | b'\n' => chars.push(text[i]),
            b'\r' => {
                chars.push(b'\n');
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'&' => {
                let end = i + text[i..].iter().position(|&b| b == b';')?;
                let reference = std::str::from_utf8(&text[i + 1..end]).ok()?;
                let code = match reference
                    .strip_prefix("#x")
                    .or(reference.strip_prefix("#X"))
                {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => reference.strip_prefix('#')?.parse().ok()?,
                };
                match code {
                    9 | 10 | 13 | 32 => chars.push(code as u8),
                    _ => return None,
                }
                i = end;
            }
            _ => return None,
        }
        i += 1;
    }
    (!chars.is_empty()).then_some(chars)
}

/// A name the service percent-encoded (`Encoded="true"`); `None` when the decoded bytes are
/// not UTF-8. A `%` not followed by two hex digits stays as it is (the crate's rule).
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|name| name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIERARCHICAL_PAGE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="insights-logs-flowlogflowevent">
  <Prefix>flowLogResourceID=/SUB/</Prefix>
  <MaxResults>5000</MaxResults>
  <Delimiter>/</Delimiter>
  <Blobs>
    <BlobPrefix><Name>flowLogResourceID=/SUB/A/</Name></BlobPrefix>
    <Blob>
      <Name>flowLogResourceID=/SUB/a &amp; b.json</Name>
      <Properties>
        <Creation-Time>Tue, 04 Nov 2025 10:00:00 GMT</Creation-Time>
        <Last-Modified>Tue, 04 Nov 2025 10:59:01 GMT</Last-Modified>
        <Etag>0x8DDF0C1A2B3C4D5</Etag>
        <Content-Length>1234</Content-Length>
        <Content-Type>application/octet-stream</Content-Type>
        <BlobType>BlockBlob</BlobType>
      </Properties>
      <OrMetadata />
    </Blob>
    <BlobPrefix><Name>flowLogResourceID=/SUB/B/</Name></BlobPrefix>
    <Blob>
      <Name Encoded="true">flowLogResourceID%3D%2FSUB%2F%EF%BF%BE.json</Name>
      <Properties>
        <Last-Modified>Tue, 04 Nov 2025 11:00:00 GMT</Last-Modified>
        <Etag>"0x1"</Etag>
        <Content-Length>0</Content-Length>
      </Properties>
    </Blob>
  </Blobs>
  <NextMarker>2!96!MDAwMDE5IWZsb3dMb2dSZXNvdXJjZUlEPS9TVUIvQi8hMDAwMDI4ITk5OTktMTItMzFUMjM6NTk6NTkuOTk5OTk5OVoh</NextMarker>
</EnumerationResults>"#;

    #[test]
    fn parses_interleaved_blobs_and_prefixes_in_order() {
        let page = parse_list_page(HIERARCHICAL_PAGE.as_bytes()).unwrap();
        assert_eq!(
            page.prefixes,
            vec!["flowLogResourceID=/SUB/A/", "flowLogResourceID=/SUB/B/"]
        );
        assert_eq!(page.blobs.len(), 2);
        let b = &page.blobs[0];
        assert_eq!(b.name, "flowLogResourceID=/SUB/a & b.json");
        assert_eq!(b.content_length, 1234);
        assert_eq!(b.etag, "0x8DDF0C1A2B3C4D5");
        assert_eq!(b.last_modified.to_rfc3339(), "2025-11-04T10:59:01+00:00");
        assert_eq!(page.blobs[1].name, "flowLogResourceID=/SUB/\u{fffe}.json");
        assert_eq!(page.blobs[1].etag, "0x1");
        assert!(page.next_marker.as_deref().unwrap().starts_with("2!96!"));
    }

    #[test]
    fn empty_last_page() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c"><Prefix>x/</Prefix><Delimiter>/</Delimiter><Blobs /><NextMarker /></EnumerationResults>"#;
        let page = parse_list_page(xml.as_bytes()).unwrap();
        assert_eq!(page, ListPage::default());
    }

    #[test]
    fn prefixes_only() {
        let xml = r#"<EnumerationResults><Blobs><BlobPrefix><Name>y=2025/</Name></BlobPrefix><BlobPrefix><Name>y=2026/</Name></BlobPrefix></Blobs><NextMarker/></EnumerationResults>"#;
        let page = parse_list_page(xml.as_bytes()).unwrap();
        assert_eq!(page.prefixes, vec!["y=2025/", "y=2026/"]);
        assert!(page.blobs.is_empty());
        assert_eq!(page.next_marker, None);
    }

    #[test]
    fn etags_normalise() {
        assert_eq!(normalize_etag("\"0x8D\""), "0x8D");
        assert_eq!(normalize_etag("W/\"0x8D\""), "0x8D");
        assert_eq!(normalize_etag("0x8D"), "0x8D");
    }

    #[test]
    fn an_encoded_name_that_is_not_utf8_is_an_error() {
        let xml = r#"<EnumerationResults><Blobs><Blob><Name Encoded="true">a%FFb</Name><Properties><Last-Modified>Tue, 04 Nov 2025 11:00:00 GMT</Last-Modified><Etag>1</Etag><Content-Length>0</Content-Length></Properties></Blob></Blobs></EnumerationResults>"#;
        assert!(parse_list_page(xml.as_bytes()).is_err());
    }

    #[test]
    fn encoded_names_are_percent_decoded_and_stray_percents_kept() {
        let page = |name: &str| {
            format!(
                r#"<EnumerationResults><Blobs><Blob><Name Encoded="true">{name}</Name><Properties><Last-Modified>Tue, 04 Nov 2025 11:00:00 GMT</Last-Modified><Etag>1</Etag><Content-Length>0</Content-Length></Properties></Blob></Blobs></EnumerationResults>"#
            )
        };
        let names = |name: &str| {
            parse_list_page(page(name).as_bytes())
                .unwrap()
                .blobs
                .into_iter()
                .map(|b| b.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("y%3D2026%2Fa%20b%C3%A9"), vec!["y=2026/a bé"]);
        assert_eq!(names("100%ZZ"), vec!["100%ZZ"]);
    }
}
