//! The event-driven mode (`[source.events]`): receives BlobCreated events from each source's
//! queue, hands the blobs they name to the poll's planning and read scheduling, and deletes a
//! message once its blobs are read and committed up to the lengths the event reported.
use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::HeldChunk;
use crate::metrics::Metrics;
use crate::polling::{PollRunner, SourceRuntime, off_the_workers};
use crate::registry::Registry;
use crate::sink::dead_letter::DeadLetter;
use crate::source::events::{EventQueue, Received, parse_message};

/// A received event whose blobs are being read: its message is deleted once every blob's
/// registry entry covers the event's length with nothing left in flight.
pub(crate) struct PendingEvent {
    source: usize,
    message: Received,
    /// (blob, length the event reported).
    blobs: Vec<(String, u64)>,
    /// When the message becomes visible again: past it, another receive brings it back and
    /// this entry is dropped.
    visible_again: tokio::time::Instant,
}

/// What the event-driven mode shares with the rest of the daemon: clones of the handles
/// `App::new` builds.
pub(crate) struct EventDriven {
    /// Plans and reads the blobs events name, as a poll would; also counts errors and tells
    /// which blobs are still busy.
    pub(crate) polling: PollRunner,
    pub(crate) registry: Registry,
    /// Where unusable messages, and messages received `max_deliveries` times, are written.
    pub(crate) dead_letter: DeadLetter,
    pub(crate) metrics: Arc<Metrics>,
    /// Whether other instances read some resources (`[cluster] shard` or
    /// `coordination_container`): a message naming only theirs is released to them, not
    /// deleted.
    pub(crate) shared: bool,
}

impl EventDriven {
    /// One receiver task per event-driven source, each until `stop`; the channel yields
    /// (source index, message). With no such source the channel is closed at once.
    pub(crate) fn start_receivers(
        &self,
        sources: &[SourceRuntime],
        stop: &CancellationToken,
    ) -> mpsc::Receiver<(usize, Received)> {
        let (tx, rx) = mpsc::channel(256);
        for source in sources {
            let (Some(queue), Some(config)) = (source.events.clone(), source.config.events.clone())
            else {
                continue;
            };
            let (tx, stop, index, name) = (
                tx.clone(),
                stop.clone(),
                source.index,
                source.config.name.clone(),
            );
            tracing::info!(source = %name, queue = %queue.display_url(), fallback_interval_s = config.fallback_interval.as_secs(), "event-driven: reading blobs as their BlobCreated events arrive");
            tokio::spawn(async move {
                loop {
                    let received = tokio::select! {
                        r = queue.receive(config.visibility_timeout) => r,
                        _ = stop.cancelled() => return,
                    };
                    let pause = match received {
                        Ok(messages) if !messages.is_empty() => {
                            for message in messages {
                                if tx.send((index, message)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        Ok(_) => config.receive_interval,
                        Err(e) => {
                            tracing::warn!(source = %name, error = %e, "receiving events failed; trying again in 5 s (listing every fallback_interval goes on)");
                            config
                                .receive_interval
                                .max(std::time::Duration::from_secs(5))
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        rx
    }

    /// Reads what a batch of messages names: the blobs of BlobCreated events this instance
    /// reads (by its resource filter and shard), from their registry offsets to their current
    /// length. Unusable messages, and messages received `max_deliveries` times, are
    /// dead-lettered and deleted; messages naming nothing to read are deleted.
    pub(crate) async fn handle_events(
        &self,
        sources: &mut [SourceRuntime],
        batch: Vec<(usize, Received)>,
        tx: &mpsc::Sender<HeldChunk>,
        pending: &mut Vec<PendingEvent>,
    ) {
        for (index, message) in batch {
            let Some(source) = sources.iter_mut().find(|s| s.index == index) else {
                continue;
            };
            let (Some(queue), Some(config)) = (source.events.clone(), source.config.events.clone())
            else {
                continue;
            };
            let name = source.config.name.clone();
            let container = source.walker.client().container_name().to_owned();
            let queue_name = format!("queue {}", queue.display_url());
            let refuse = |reason: String| {
                // A file write and fsync: off the runtime's workers.
                let written = off_the_workers(|| {
                    self.dead_letter
                        .write_problem(&queue_name, 0, &reason, message.text.as_bytes())
                        .and_then(|()| self.dead_letter.sync())
                });
                if let Err(e) = written {
                    tracing::error!(source = %name, error = %e, "cannot dead-letter an event message; deleting it anyway (the fallback listing reads its blob)");
                }
                tracing::warn!(source = %name, message_id = %message.id, reason = %reason, "event message dead-lettered and deleted");
            };
            if message.dequeue_count > u64::from(config.max_deliveries) {
                refuse(format!(
                    "received {} times without its blobs being delivered (max_deliveries {})",
                    message.dequeue_count, config.max_deliveries
                ));
                self.delete_event(&queue, &message, &name).await;
                continue;
            }
            let parsed = match parse_message(&message.text, &container) {
                Ok(parsed) => parsed,
                Err(e) => {
                    refuse(format!("not a usable Event Grid message: {e}"));
                    self.delete_event(&queue, &message, &name).await;
                    continue;
                }
            };
            let named = parsed.created.len();
            let created: Vec<_> = parsed
                .created
                .into_iter()
                .filter(|c| source.walker.accepts(&c.blob))
                .collect();
            if created.is_empty() {
                if named > 0 && self.shared {
                    // Another instance reads these blobs (its shard, or units it owns): let it
                    // have the message now. Without sharing, the resource filter or prefix
                    // excludes them for good.
                    if let Err(e) = queue.release(&message).await {
                        tracing::warn!(source = %name, error = %e, "cannot release an event message of another shard; it reappears after visibility_timeout");
                    }
                } else {
                    self.delete_event(&queue, &message, &name).await;
                }
                continue;
            }
            let mut items = Vec::new();
            let mut blobs = Vec::new();
            for event in &created {
                // The blob as it is now: events can arrive late, twice or out of order.
                match source.walker.client().properties(&event.blob).await {
                    Ok(Some(item)) => {
                        blobs.push((event.blob.clone(), event.content_length));
                        items.push(item);
                    }
                    Ok(None) => {
                        tracing::debug!(source = %name, blob = %event.blob, "event names a blob that is gone; nothing to read");
                    }
                    Err(e) => {
                        self.polling.error();
                        tracing::warn!(source = %name, blob = %event.blob, error = %e, "cannot read the properties of an event's blob; the message comes back after visibility_timeout");
                        blobs.push((event.blob.clone(), event.content_length));
                    }
                }
            }
            let tasks = self
                .polling
                .plan(source, &items, &BTreeSet::new(), false, chrono::Utc::now())
                .await;
            self.polling.read_all(source, tasks, tx).await;
            self.metrics.sources[index].add(&self.metrics.sources[index].events_received, 1);
            pending.push(PendingEvent {
                source: index,
                message,
                blobs,
                visible_again: tokio::time::Instant::now() + config.visibility_timeout,
            });
        }
        // Messages whose reads delivered before this returned are done already.
        self.complete_events(sources, pending).await;
    }

    /// Deletes the messages whose blobs are read and committed up to the events' lengths;
    /// forgets those whose visibility ran out (they are received again).
    pub(crate) async fn complete_events(
        &self,
        sources: &[SourceRuntime],
        pending: &mut Vec<PendingEvent>,
    ) {
        let now = tokio::time::Instant::now();
        let mut waiting = Vec::with_capacity(pending.len());
        for event in pending.drain(..) {
            let Some(source) = sources.iter().find(|s| s.index == event.source) else {
                continue;
            };
            let Some(queue) = &source.events else {
                continue;
            };
            let name = &source.config.name;
            let done = event.blobs.iter().all(|(blob, length)| {
                !self.polling.is_busy(event.source, blob)
                    && matches!(self.registry.get(name, blob), Ok(Some(entry)) if entry.length_seen >= *length)
            });
            if done {
                self.delete_event(queue, &event.message, name).await;
                self.metrics.sources[event.source]
                    .add(&self.metrics.sources[event.source].events_completed, 1);
            } else if now < event.visible_again {
                waiting.push(event);
            }
        }
        *pending = waiting;
    }

    async fn delete_event(&self, queue: &EventQueue, message: &Received, source: &str) {
        if let Err(e) = queue.delete(message).await {
            tracing::warn!(source = %source, message_id = %message.id, error = %e, "cannot delete a done event message; it comes back after visibility_timeout and is done again at no cost");
        }
    }
}
