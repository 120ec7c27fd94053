//! Event-driven mode: receives Event Grid's `Microsoft.Storage.BlobCreated` events for one
//! container from a Storage Queue (`[source.events]`), says which blob grew to which length,
//! and deletes or releases messages as the daemon decides. Parsing is pure and unit-tested.
//!
//! Event Grid writes one event per committed block list (a flow log appends about one block a
//! minute), each naming the blob in `subject` (`/blobServices/default/containers/C/blobs/NAME`)
//! and its new `data.contentLength` and `data.eTag`. Messages arrive base64-encoded (the
//! default of Event Grid's Storage Queue handler) or as raw JSON; both are read. One message
//! holds one event or, from some senders, an array of events.
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::Url;
use azure_storage_queue::{
    QueueClient, QueueClientOptions,
    models::{QueueClientReceiveMessagesOptions, QueueClientUpdateMessageOptions},
};
use base64::Engine as _;
use serde::Deserialize;

use crate::config::events::EventsConfig;
use crate::metrics::StorageStats;
use crate::source::client::{StorageError, client_options};
use crate::source::credential::{Credential, CredentialError, ResolvedStorage};

/// The event type flowlogd acts on; every other type is acknowledged and ignored.
pub const BLOB_CREATED: &str = "Microsoft.Storage.BlobCreated";

/// A blob that grew, as an event tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCreated {
    /// Blob name inside the container (decoded from the event's `subject`).
    pub blob: String,
    /// The blob's length after the commit the event reports.
    pub content_length: u64,
    /// Its ETag then, without quotes.
    pub etag: String,
}

/// Why a message is not a usable event for this container (it is dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the message is neither JSON nor base64 of JSON: {0}")]
    NotJson(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("the event's subject {0:?} names no blob of a container")]
    Subject(String),
}

/// What one message asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// BlobCreated events of this source's container.
    pub created: Vec<BlobCreated>,
    /// Events of other types or other containers: nothing to do.
    pub ignored: usize,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "eventType", default)]
    event_type: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(rename = "contentLength", default)]
    content_length: Option<u64>,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<RawEvent>),
    One(RawEvent),
}

/// Reads one message's text: the BlobCreated events of `container` in it.
pub fn parse_message(text: &str, container: &str) -> Result<Parsed, EventError> {
    let trimmed = text.trim();
    let events: OneOrMany = match serde_json::from_str(trimmed) {
        Ok(events) => events,
        Err(json_error) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .map_err(|_| EventError::NotJson(json_error.to_string()))?;
            serde_json::from_slice(&decoded).map_err(|e| EventError::NotJson(e.to_string()))?
        }
    };
    let events = match events {
        OneOrMany::Many(events) => events,
        OneOrMany::One(event) => vec![event],
    };
    let mut parsed = Parsed::default();
    for event in events {
        if event.event_type.as_deref() != Some(BLOB_CREATED) {
            parsed.ignored += 1;
            continue;
        }
        let subject = event.subject.ok_or(EventError::Missing("subject"))?;
        let (event_container, blob) = subject_blob(&subject)?;
        if event_container != container {
            parsed.ignored += 1;
            continue;
        }
        let data = event.data.ok_or(EventError::Missing("data"))?;
        parsed.created.push(BlobCreated {
            blob,
            content_length: data
                .content_length
                .ok_or(EventError::Missing("data.contentLength"))?,
            etag: data
                .etag
                .ok_or(EventError::Missing("data.eTag"))?
                .trim_matches('"')
                .to_owned(),
        });
    }
    Ok(parsed)
}

/// Container and blob name of a subject `/blobServices/default/containers/C/blobs/NAME`. The
/// name is as stored (Event Grid does not percent-encode it).
fn subject_blob(subject: &str) -> Result<(&str, String), EventError> {
    let bad = || EventError::Subject(subject.to_owned());
    let rest = subject
        .strip_prefix("/blobServices/default/containers/")
        .ok_or_else(bad)?;
    let (container, blob) = rest.split_once("/blobs/").ok_or_else(bad)?;
    if container.is_empty() || blob.is_empty() {
        return Err(bad());
    }
    Ok((container, blob.to_owned()))
}

/// A message received and hidden from other consumers until deleted or released.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub pop_receipt: String,
    /// Times the message has been received, this time included.
    pub dequeue_count: u64,
    pub text: String,
}

/// One source's event queue.
#[derive(Clone)]
pub struct EventQueue {
    client: Arc<QueueClient>,
    /// The source's request counters (`queue_requests`).
    stats: Arc<StorageStats>,
    /// The queue's URL, for logs (never carries a secret: SAS credentials are refused).
    display: Url,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("url", &self.display.as_str())
            .finish()
    }
}

impl EventQueue {
    /// A client for `events.queue` with the source's credential (an account key or an Entra
    /// identity with the Storage Queue Data Message Processor role; a blob SAS does not cover
    /// the Queue service).
    pub fn new(
        resolved: &ResolvedStorage,
        events: &EventsConfig,
        account: Option<&str>,
        endpoint_suffix: &str,
        stats: Arc<StorageStats>,
    ) -> Result<EventQueue, StorageError> {
        let config_error = |reason: String| {
            StorageError::Config(CredentialError {
                field: "events.queue_endpoint".into(),
                reason,
            })
        };
        let endpoint = match (&events.queue_endpoint, account) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(account)) => format!("https://{account}.queue.{endpoint_suffix}"),
            (None, None) => {
                return Err(config_error(
                    "set `account` or `events.queue_endpoint`: the queue's URL cannot be derived"
                        .into(),
                ));
            }
        };
        let url = Url::parse(&format!("{endpoint}/{}", events.queue))
            .map_err(|e| config_error(format!("{endpoint:?}: {e}")))?;
        // A SAS of the Blob service (in the URL) does not cover the Queue service.
        if let Credential::Sas(_) = &resolved.credential {
            return Err(StorageError::Config(CredentialError {
                field: "events".into(),
                reason: "event-driven mode needs an account key, a connection string with a key, or an Entra identity: a SAS of the Blob service does not cover the Queue service".into(),
            }));
        }
        let (options, token) = client_options(resolved, &stats)?;
        let client = QueueClient::new(
            url.clone(),
            token,
            Some(QueueClientOptions {
                client_options: options,
                ..Default::default()
            }),
        )
        .map_err(|e| StorageError::from_azure(format!("queue {url}"), e))?;
        Ok(EventQueue {
            client: Arc::new(client),
            stats,
            display: url,
        })
    }

    /// The queue's URL, for logs.
    pub fn display_url(&self) -> &Url {
        &self.display
    }

    /// Up to 32 messages, each hidden from other consumers for `visibility`.
    pub async fn receive(&self, visibility: Duration) -> Result<Vec<Received>, StorageError> {
        let target = || format!("queue {}", self.display);
        StorageStats::add(&self.stats.queue_requests, 1);
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(32),
            visibility_timeout: Some(
                i32::try_from(visibility.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            ..Default::default()
        };
        let response = self
            .client
            .receive_messages(Some(options))
            .await
            .map_err(|e| StorageError::from_azure(target(), e))?;
        let messages = response
            .into_model()
            .map_err(|e| StorageError::from_azure(target(), e))?;
        Ok(messages
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    dequeue_count: m
                        .dequeue_count
                        .and_then(|c| u64::try_from(c).ok())
                        .unwrap_or(1),
                    text: m.message_text.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Deletes a message that is done with. A 404 (already deleted, or received again by
    /// another consumer after its visibility ran out) is not an error: its work is done.
    pub async fn delete(&self, message: &Received) -> Result<(), StorageError> {
        StorageStats::add(&self.stats.queue_requests, 1);
        let result = self
            .client
            .delete_message(&message.id, &message.pop_receipt, None)
            .await;
        self.gone_is_done(result.map(drop))
    }

    /// A message the queue no longer has (deleted, or received again by another consumer
    /// after its visibility ran out) needs nothing more from this consumer.
    fn gone_is_done(&self, result: azure_core::Result<()>) -> Result<(), StorageError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => match StorageError::from_azure(format!("queue {}", self.display), e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Makes a message visible again in a second (for the instance that reads its blob): not
    /// at once, so that this instance does not receive it straight back in a tight loop.
    pub async fn release(&self, message: &Received) -> Result<(), StorageError> {
        StorageStats::add(&self.stats.queue_requests, 1);
        let result = self
            .client
            .update_message(
                &message.id,
                &message.pop_receipt,
                1,
                Some(QueueClientUpdateMessageOptions::default()),
            )
            .await;
        self.gone_is_done(result.map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as Event Grid writes it for a block list committed by Network Watcher (the
    /// shape of Microsoft's documented BlobCreated sample, with a flow log's names).
    const EVENT: &str = r#"{
      "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/flowlogs",
      "subject": "/blobServices/default/containers/insights-logs-flowlogflowevent/blobs/flowLogResourceID=/SUB_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/y=2026/m=12/d=01/h=14/m=00/macAddress=00224871C2A1/PT1H.json",
      "eventType": "Microsoft.Storage.BlobCreated",
      "id": "831e1650-001e-001b-66ab-eeb76e069631",
      "data": {
        "api": "PutBlockList",
        "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
        "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
        "eTag": "\"0x8D4BCC2E4835CD0\"",
        "contentType": "application/octet-stream",
        "contentLength": 524288,
        "blobType": "BlockBlob",
        "url": "https://flowlogs.blob.core.windows.net/insights-logs-flowlogflowevent/flowLogResourceID=/SUB_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/y=2026/m=12/d=01/h=14/m=00/macAddress=00224871C2A1/PT1H.json",
        "sequencer": "00000000000004420000000000028963"
      },
      "dataVersion": "",
      "metadataVersion": "1",
      "eventTime": "2026-12-01T14:01:00.0000000Z"
    }"#;

    const CONTAINER: &str = "insights-logs-flowlogflowevent";

    fn expected() -> BlobCreated {
        BlobCreated {
            blob: "flowLogResourceID=/SUB_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/y=2026/m=12/d=01/h=14/m=00/macAddress=00224871C2A1/PT1H.json".into(),
            content_length: 524_288,
            etag: "0x8D4BCC2E4835CD0".into(),
        }
    }

    #[test]
    fn a_blob_created_event_names_its_blob_length_and_etag_raw_or_base64_alone_or_in_an_array() {
        let base64 = base64::engine::general_purpose::STANDARD.encode(EVENT);
        let array = format!("[{EVENT}]");
        for text in [EVENT.to_owned(), base64, array] {
            let parsed = parse_message(&text, CONTAINER).unwrap();
            assert_eq!(parsed.created, vec![expected()]);
            assert_eq!(parsed.ignored, 0);
        }
    }

    #[test]
    fn other_event_types_and_other_containers_are_ignored_not_errors() {
        let deleted = EVENT.replace("BlobCreated", "BlobDeleted");
        let elsewhere = EVENT.replace(
            "containers/insights-logs-flowlogflowevent/",
            "containers/other/",
        );
        let parsed = parse_message(&format!("[{deleted},{elsewhere},{EVENT}]"), CONTAINER).unwrap();
        assert_eq!(parsed.created, vec![expected()]);
        assert_eq!(parsed.ignored, 2);
    }

    #[test]
    fn garbage_and_events_missing_a_field_are_errors_naming_what_is_wrong() {
        assert!(matches!(
            parse_message("not json, not base64!", CONTAINER),
            Err(EventError::NotJson(_))
        ));
        let no_length = EVENT.replace("\"contentLength\": 524288,", "");
        assert_eq!(
            parse_message(&no_length, CONTAINER),
            Err(EventError::Missing("data.contentLength"))
        );
        let bad_subject = EVENT.replace("/blobServices/default/containers/", "/somewhere/");
        assert!(matches!(
            parse_message(&bad_subject, CONTAINER),
            Err(EventError::Subject(_))
        ));
    }
}
