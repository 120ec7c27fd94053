//! The dead-letter file: one NDJSON line per document Elasticsearch refused for good and per
//! piece of input that never became a document, so nothing is dropped silently (invariant 4).
//!
//! Line shapes (`kind` tells them apart):
//! ```json
//! {"@timestamp":"…","kind":"rejected","blob":"container/blob","record_offset":12,"tuple_index":3,
//!  "index":"flowlogs-2026.47","id":"…","status":400,"error":{"type":"mapper_parsing_exception",
//!  "reason":"…","caused_by":{…}},"document":{…}}
//! {"@timestamp":"…","kind":"problem","blob":"container/blob","offset":12,"reason":"…",
//!  "excerpt":"…","excerpt_len":123,"truncated":false}
//! ```
//! `@timestamp` is when the line was written. Every line is written with one `write` on a file
//! opened for appending (no user-space buffer), so a crash never leaves half a line from a
//! buffer; [`DeadLetter::sync`] makes lines durable before offsets are committed.
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;

/// Longest excerpt of raw input kept in a `problem` line, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 4096;

/// The dead-letter file. Cheap to clone; clones share the file and the counters.
#[derive(Clone)]
pub struct DeadLetter {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Opened on first use when not opened up front.
    file: Mutex<Option<File>>,
    rejected: AtomicU64,
    problems: AtomicU64,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("path", &self.inner.path)
            .field("counts", &self.counts())
            .finish()
    }
}

/// Lines written since this [`DeadLetter`] was created, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterCounts {
    /// Documents Elasticsearch refused.
    pub rejected: u64,
    /// Input that never became a document (malformed bytes, records, tuples).
    pub problems: u64,
}

/// Where a document of a batch came from (its dead-letter line says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOrigin {
    /// `container/blob name`.
    pub blob: String,
    pub record_offset: u64,
    pub tuple_index: u32,
}

/// One document Elasticsearch refused, as handed to [`DeadLetter::write_rejected`].
#[derive(Debug, Clone)]
pub struct RejectedDocument<'a> {
    pub origin: ItemOrigin,
    pub index: Option<String>,
    pub id: Option<String>,
    /// The item's HTTP status (or the request's, for a document too large to send).
    pub status: u16,
    /// The `error` object of the bulk item as Elasticsearch returned it (`type`, `reason`,
    /// `caused_by`, …).
    pub error: serde_json::Value,
    /// The document JSON as sent.
    pub document: &'a [u8],
}

impl DeadLetter {
    /// Opens (creating if needed) `path` for appending now, so a bad path fails at startup.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = open_append(&path)?;
        Ok(Self::with_file(path, Some(file)))
    }

    /// A dead-letter file opened on first write (no I/O now).
    pub fn lazy(path: impl Into<PathBuf>) -> Self {
        Self::with_file(path.into(), None)
    }

    fn with_file(path: PathBuf, file: Option<File>) -> Self {
        DeadLetter {
            inner: Arc::new(Inner {
                path,
                file: Mutex::new(file),
                rejected: AtomicU64::new(0),
                problems: AtomicU64::new(0),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn counts(&self) -> DeadLetterCounts {
        DeadLetterCounts {
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            problems: self.inner.problems.load(Ordering::Relaxed),
        }
    }

    /// Appends one line for input at `offset` of `blob` (`container/blob`) that never became a
    /// document: `reason` says why, `raw_excerpt` is the start of the offending bytes (cut to
    /// [`MAX_EXCERPT_BYTES`]; invalid UTF-8 replaced). Written straight to the OS; call
    /// [`DeadLetter::sync`] before committing the offset past it.
    pub fn write_problem(
        &self,
        blob: &str,
        offset: u64,
        reason: &str,
        raw_excerpt: &[u8],
    ) -> io::Result<()> {
        let cut = &raw_excerpt[..raw_excerpt.len().min(MAX_EXCERPT_BYTES)];
        let excerpt = String::from_utf8_lossy(cut);
        // A lossy cut in the middle of a multi-byte character ends in U+FFFD: harmless.
        let line = ProblemLine {
            timestamp: now(),
            kind: "problem",
            blob,
            offset,
            reason,
            excerpt: &excerpt,
            excerpt_len: raw_excerpt.len(),
            truncated: raw_excerpt.len() > cut.len(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.append(&bytes)?;
        self.inner.problems.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends one line per refused document, in one write, then syncs the file.
    pub fn write_rejected(&self, documents: &[RejectedDocument<'_>]) -> io::Result<()> {
        let lines = Self::rejected_lines(documents)?;
        self.append_rejected_lines(&lines, documents.len())
    }

    /// [`DeadLetter::write_rejected`] for async callers: the lines are built here, the write
    /// and fsync run on the blocking pool, so a slow disk never stalls a runtime worker.
    pub async fn write_rejected_off_runtime(
        &self,
        documents: &[RejectedDocument<'_>],
    ) -> io::Result<()> {
        let lines = Self::rejected_lines(documents)?;
        let count = documents.len();
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_rejected_lines(&lines, count))
            .await
            .map_err(io::Error::other)?
    }

    fn append_rejected_lines(&self, lines: &[u8], count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        self.append(lines)?;
        self.sync()?;
        self.inner
            .rejected
            .fetch_add(count as u64, Ordering::Relaxed);
        Ok(())
    }

    /// One `rejected` line per document.
    fn rejected_lines(documents: &[RejectedDocument<'_>]) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(documents.iter().map(|d| d.document.len() + 512).sum());
        let timestamp = now();
        for d in documents {
            // Embed the document as JSON when it is JSON (it always is from our encoder), else
            // as a string: a document refused for being unparsable must not break the file.
            let text = std::str::from_utf8(d.document).ok();
            let raw = text.and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
            let line = RejectedLine {
                timestamp: &timestamp,
                kind: "rejected",
                blob: &d.origin.blob,
                record_offset: d.origin.record_offset,
                tuple_index: d.origin.tuple_index,
                index: d.index.as_deref(),
                id: d.id.as_deref(),
                status: d.status,
                error: &d.error,
                document: raw,
                document_text: if raw.is_none() {
                    Some(String::from_utf8_lossy(d.document))
                } else {
                    None
                },
            };
            serde_json::to_writer(&mut bytes, &line).map_err(io::Error::other)?;
            bytes.push(b'\n');
        }
        Ok(bytes)
    }

    /// Makes every line written so far durable (fsync).
    pub fn sync(&self) -> io::Result<()> {
        let guard = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let mut guard = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(open_append(&self.inner.path)?);
        }
        match guard.as_mut() {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("dead-letter file not open")),
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("dead-letter file {}: {e}", self.inner.path.display()),
            )
        })
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open dead-letter file {}: {e}", path.display()),
            )
        })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
struct ProblemLine<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    kind: &'static str,
    blob: &'a str,
    offset: u64,
    reason: &'a str,
    excerpt: &'a str,
    /// Length of the whole raw input the excerpt was cut from.
    excerpt_len: usize,
    truncated: bool,
}

#[derive(Serialize)]
struct RejectedLine<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    kind: &'static str,
    blob: &'a str,
    record_offset: u64,
    tuple_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    status: u16,
    error: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_text: Option<std::borrow::Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn problems_and_rejections_share_the_file_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.ndjson");
        let dl = DeadLetter::lazy(&path);
        assert!(!path.exists(), "lazy opens nothing");
        let big = vec![b'x'; MAX_EXCERPT_BYTES + 10];
        dl.write_problem("c/b", 7, "record is not JSON", &big)
            .unwrap();
        dl.write_problem("c/b", 9, "bad \"tuple\"", b"1,2,\xff")
            .unwrap();
        let origin = ItemOrigin {
            blob: "c/b".into(),
            record_offset: 12,
            tuple_index: 3,
        };
        dl.write_rejected(&[
            RejectedDocument {
                origin: origin.clone(),
                index: Some("f-1".into()),
                id: Some("abc".into()),
                status: 400,
                error: json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [source.ip]"}),
                document: br#"{"source":{"ip":"nope"}}"#,
            },
            RejectedDocument {
                origin,
                index: None,
                id: None,
                status: 400,
                error: json!({"type": "json_parse_exception"}),
                document: b"{\"unterminated",
            },
        ])
        .unwrap();
        assert_eq!(
            dl.counts(),
            DeadLetterCounts {
                rejected: 2,
                problems: 2
            }
        );

        let l = lines(&path);
        assert_eq!(l.len(), 4);
        assert_eq!(l[0]["kind"], "problem");
        assert_eq!(l[0]["offset"], 7);
        assert_eq!(l[0]["excerpt"].as_str().unwrap().len(), MAX_EXCERPT_BYTES);
        assert_eq!(l[0]["excerpt_len"], MAX_EXCERPT_BYTES + 10);
        assert_eq!(l[0]["truncated"], true);
        assert_eq!(l[1]["reason"], "bad \"tuple\"");
        assert_eq!(l[1]["excerpt"], "1,2,\u{fffd}");
        assert_eq!(l[2]["kind"], "rejected");
        assert_eq!(
            l[2]["document"]["source"]["ip"], "nope",
            "documents are embedded as JSON"
        );
        assert_eq!(l[2]["error"]["type"], "mapper_parsing_exception");
        assert_eq!(
            (
                l[2]["blob"].as_str(),
                &l[2]["record_offset"],
                &l[2]["tuple_index"]
            ),
            (Some("c/b"), &json!(12), &json!(3))
        );
        assert_eq!(
            (l[2]["index"].as_str(), l[2]["id"].as_str(), &l[2]["status"]),
            (Some("f-1"), Some("abc"), &json!(400))
        );
        assert!(l[2]["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            l[3]["document_text"], "{\"unterminated",
            "unparsable documents are kept as text"
        );

        // A second handle appends to the same file.
        let again = DeadLetter::open(&path).unwrap();
        again.write_problem("c/b", 1, "r", b"").unwrap();
        assert_eq!(lines(&path).len(), 5);
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let e = DeadLetter::open("/nonexistent-dir/dl.ndjson").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/dl.ndjson"), "{e}");
        let dl = DeadLetter::lazy("/nonexistent-dir/dl.ndjson");
        let e = dl.write_problem("b", 0, "r", b"").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/dl.ndjson"), "{e}");
        assert_eq!(dl.counts().problems, 0, "only written lines count");
    }
}
