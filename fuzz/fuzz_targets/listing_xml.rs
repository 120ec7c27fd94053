//! List Blobs parser (`parse_list_page`): any page the storage service can send must come back with exactly the names, lengths, ETags, times and marker it holds, because a name read wrong is a blob flowlogd can never fetch, and a lost marker ends a listing early (blobs never read).
//!
//! Two modes, by the first byte:
//! - `<` or a UTF-8 byte order mark: the input is an XML document. `parse_list_page` must not
//!   panic; a page it accepts, written out again as the service would, must parse to the same
//!   page.
//! - anything else: the bytes describe a page (entries of blob or prefix, names drawn from
//!   an alphabet that includes XML metacharacters, whitespace, control characters and
//!   non-characters, lengths, ETags, times, a marker). It is written as the service writes it
//!   (names XML-escaped, or percent-encoded with `Encoded="true"` when XML 1.0 cannot carry
//!   them) and must parse back to exactly that page.
#![no_main]

use chrono::{DateTime, Utc};
use flowlogd::source::listing::{BlobItem, ListPage, normalize_etag, parse_list_page};
use libfuzzer_sys::fuzz_target;

/// Characters names are drawn from: the usual, XML metacharacters, whitespace (which an XML
/// reader may trim), characters XML 1.0 cannot carry, multi-byte UTF-8.
const ALPHABET: &[char] = &[
    'a', 'Z', '0', '9', '/', '=', '.', '-', '_', ' ', '&', '<', '>', '"', '\'', '%', '+', ';', '#',
    '\t', '\n', '\r', '\u{1}', '\u{1f}', '\u{7f}', '\u{85}', '\u{a0}', 'é', '€', '😀', '\u{fffe}',
    '\u{ffff}', ']', '!', '?', '*', '\\', ':', '@',
];

/// Characters XML 1.0 documents cannot hold, even as references: such names are sent encoded.
fn xml_can_carry(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // As references, so that no end-of-line normalisation can change them.
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
}

#[derive(Clone, Copy)]
struct Style {
    /// Percent-encode every byte, not only those outside the unreserved set.
    encode_all: bool,
    lower_hex: bool,
    /// Send `Encoded="true"` even when XML could carry the name.
    force_encoded: bool,
    pretty: bool,
    quoted_etag: bool,
}

/// Whether a non-empty name made only of XML whitespace (` `, `\t`, ...) is sent as it is (as
/// the service does) and must come back whole. It did not (finding 5: quick-xml's serde
/// deserializer drops a text node that is all whitespace) until `parse_list_page` re-encoded
/// such names first; `false` would send them encoded again. (Whitespace at the ends of other
/// names is kept, and checked.)
const STRICT_WHITESPACE: bool = true;

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn push_name(name: &str, style: Style, out: &mut String) {
    let blank = !name.is_empty() && name.chars().all(is_xml_space);
    if style.force_encoded || !name.chars().all(xml_can_carry) || (blank && !STRICT_WHITESPACE) {
        out.push_str("<Name Encoded=\"true\">");
        for b in name.bytes() {
            if !style.encode_all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                out.push(b as char);
            } else if style.lower_hex {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    } else {
        out.push_str("<Name>");
        escape(name, out);
    }
    out.push_str("</Name>");
}

/// Writes `page` as a List Blobs response, blobs and prefixes interleaved as `order` says.
fn render(page: &ListPage, order: &[bool], style: Style) -> String {
    let nl = if style.pretty { "\n  " } else { "" };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults \
         ServiceEndpoint=\"https://acct.blob.core.windows.net/\" \
         ContainerName=\"insights-logs-flowlogflowevent\">",
    );
    out.push_str(nl);
    out.push_str("<Prefix>resourceId=/</Prefix><Delimiter>/</Delimiter>");
    out.push_str(nl);
    if order.is_empty() {
        out.push_str("<Blobs />");
    } else {
        out.push_str("<Blobs>");
        let (mut blobs, mut prefixes) = (page.blobs.iter(), page.prefixes.iter());
        for &is_blob in order {
            out.push_str(nl);
            if is_blob {
                let b = blobs.next().expect("order matches the page");
                out.push_str("<Blob>");
                push_name(&b.name, style, &mut out);
                out.push_str("<Properties>");
                let time = b.last_modified.format("%a, %d %b %Y %H:%M:%S GMT");
                out.push_str(&format!("<Creation-Time>{time}</Creation-Time>"));
                out.push_str(&format!("<Last-Modified>{time}</Last-Modified>"));
                out.push_str("<Etag>");
                if style.quoted_etag {
                    escape(&format!("\"{}\"", b.etag), &mut out);
                } else {
                    escape(&b.etag, &mut out);
                }
                out.push_str("</Etag>");
                out.push_str(&format!(
                    "<Content-Length>{}</Content-Length>",
                    b.content_length
                ));
                out.push_str(
                    "<Content-Type>application/octet-stream</Content-Type>\
                     <BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus>",
                );
                out.push_str("</Properties><OrMetadata /></Blob>");
            } else {
                out.push_str("<BlobPrefix>");
                push_name(
                    prefixes.next().expect("order matches the page"),
                    style,
                    &mut out,
                );
                out.push_str("</BlobPrefix>");
            }
        }
        out.push_str(nl);
        out.push_str("</Blobs>");
    }
    out.push_str(nl);
    match &page.next_marker {
        Some(marker) => {
            out.push_str("<NextMarker>");
            escape(marker, &mut out);
            out.push_str("</NextMarker>");
        }
        None => out.push_str("<NextMarker />"),
    }
    out.push_str("</EnumerationResults>");
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.byte().unwrap_or(0);
        }
        u64::from_le_bytes(v)
    }
    fn text(&mut self, max: u8, alphabet: &[char]) -> String {
        let len = self.byte().unwrap_or(0) % (max + 1);
        (0..len)
            .map_while(|_| self.byte())
            .map(|b| alphabet[usize::from(b) % alphabet.len()])
            .collect()
    }
}

fn structured(input: &[u8]) {
    let mut r = Reader(input);
    let flags = r.byte().unwrap_or(0);
    let style = Style {
        encode_all: flags & 1 != 0,
        lower_hex: flags & 2 != 0,
        force_encoded: flags & 4 != 0,
        pretty: flags & 8 != 0,
        quoted_etag: flags & 16 != 0,
    };
    let marker_chars: Vec<char> = ('a'..='z')
        .chain('0'..='9')
        .chain(['!', '+', '/', '='])
        .collect();
    let marker = r.text(40, &marker_chars);
    let etag_chars: Vec<char> = ('0'..='9').chain('A'..='F').chain(['x']).collect();
    let mut page = ListPage {
        next_marker: (!marker.is_empty()).then_some(marker),
        ..ListPage::default()
    };
    let mut order = Vec::new();
    while order.len() < 16 {
        let Some(tag) = r.byte() else { break };
        let name = r.text(40, ALPHABET);
        if tag & 1 == 0 {
            page.prefixes.push(name);
            order.push(false);
            continue;
        }
        let content_length = r.u64();
        let etag = r.text(20, &etag_chars);
        // Seconds from 1970 to 9999-12-31 (what RFC 7231 dates can say with four digits).
        let secs = (r.u64() % 253_402_300_800) as i64;
        let last_modified: DateTime<Utc> = DateTime::from_timestamp(secs, 0).expect("in range");
        page.blobs.push(BlobItem {
            name,
            content_length,
            etag,
            last_modified,
        });
        order.push(true);
    }
    let xml = render(&page, &order, style);
    match parse_list_page(xml.as_bytes()) {
        Ok(parsed) => assert_eq!(parsed, page, "page read differs from page written:\n{xml}"),
        Err(e) => panic!("a page as the service writes it was refused: {e}\n{xml}"),
    }
}

fn raw(input: &[u8]) {
    let Ok(page) = parse_list_page(input) else {
        return;
    };
    assert_ne!(
        page.next_marker.as_deref(),
        Some(""),
        "an empty marker must be None"
    );
    for b in &page.blobs {
        assert_eq!(normalize_etag(&format!("\"{}\"", b.etag)), b.etag);
    }
    // Written out again (blobs first), the page must read the same.
    let order: Vec<bool> = page
        .blobs
        .iter()
        .map(|_| true)
        .chain(page.prefixes.iter().map(|_| false))
        .collect();
    let style = Style {
        encode_all: false,
        lower_hex: false,
        force_encoded: false,
        pretty: false,
        quoted_etag: true,
    };
    // Times outside four-digit years cannot be written as RFC 7231 dates.
    if page
        .blobs
        .iter()
        .any(|b| !(0..=253_402_300_799).contains(&b.last_modified.timestamp()))
    {
        return;
    }
    let xml = render(&page, &order, style);
    match parse_list_page(xml.as_bytes()) {
        Ok(again) => assert_eq!(again, page, "page read again differs:\n{xml}"),
        Err(e) => panic!("an accepted page written out again was refused: {e}\n{xml}"),
    }
}

fuzz_target!(|input: &[u8]| {
    match input.first() {
        Some(b'<') | Some(0xEF) => raw(input),
        _ => structured(input),
    }
});
