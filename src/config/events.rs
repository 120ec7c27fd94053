//! `[source.events]`: the Storage Queue an Event Grid subscription fills with the container's
//! `Microsoft.Storage.BlobCreated` events (event-driven mode); types, defaults and validation.
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, DAY, SECOND, check_count, check_duration, de_duration};

/// Event-driven reading for one source: a committed block is read when its event arrives
/// instead of at the next listing, and listing runs only every `fallback_interval` to catch
/// events that never came.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Name of the Storage Queue (in the source's storage account) that an Event Grid
    /// subscription on the account fills with `Microsoft.Storage.BlobCreated` events of this
    /// container, in the Event Grid schema. Required.
    pub queue: String,
    /// Queue service URL, e.g. `http://127.0.0.1:10001/devstoreaccount1` (Azurite). Default:
    /// `https://ACCOUNT.queue.ENDPOINT_SUFFIX`.
    #[serde(default)]
    pub queue_endpoint: Option<String>,
    /// How long a received message stays hidden from other instances while its blob is read
    /// and delivered; a message not deleted by then is received again. `"5s"` to `"1d"`.
    /// Default: `"5m"`.
    #[serde(
        default = "default_visibility_timeout",
        deserialize_with = "de_duration"
    )]
    pub visibility_timeout: Duration,
    /// Wait between receives when the queue had nothing. `"100ms"` to `"1m"`. Default: `"1s"`.
    #[serde(default = "default_receive_interval", deserialize_with = "de_duration")]
    pub receive_interval: Duration,
    /// The container is still listed this often, for events that were lost. `"1s"` to `"1d"`.
    /// Default: `"15m"`.
    #[serde(
        default = "default_fallback_interval",
        deserialize_with = "de_duration"
    )]
    pub fallback_interval: Duration,
    /// A message received this many times without being completed (unreadable, or its blob
    /// never delivered) is dead-lettered and deleted. 1 to 100. Default: 5.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
}

fn default_visibility_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_receive_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_fallback_interval() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_max_deliveries() -> u32 {
    5
}

impl EventsConfig {
    /// Checks names and ranges; `key` prefixes the keys named in errors (`source.NAME.events`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{key}.{k}");
        // Azure's queue names: 3-63 lowercase letters, digits and single dashes, starting and
        // ending with a letter or digit.
        let name = self.queue.as_str();
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !valid {
            return Err(ConfigError::key(
                key("queue"),
                format!(
                    "{name:?} is not a queue name: 3 to 63 lowercase letters, digits and single dashes, starting and ending with a letter or digit"
                ),
            ));
        }
        check_duration(
            key("visibility_timeout"),
            self.visibility_timeout,
            5 * SECOND,
            DAY,
        )?;
        check_duration(
            key("receive_interval"),
            self.receive_interval,
            Duration::from_millis(100),
            60 * SECOND,
        )?;
        check_duration(
            key("fallback_interval"),
            self.fallback_interval,
            SECOND,
            DAY,
        )?;
        check_count(
            key("max_deliveries"),
            u64::from(self.max_deliveries),
            1,
            100,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(queue: &str) -> EventsConfig {
        toml::from_str(&format!("queue = \"{queue}\"")).unwrap()
    }

    #[test]
    fn defaults_are_those_documented_and_queue_names_follow_azures_rules() {
        let ok = events("flowlog-events");
        assert_eq!(ok.visibility_timeout, Duration::from_secs(300));
        assert_eq!(ok.receive_interval, Duration::from_secs(1));
        assert_eq!(ok.fallback_interval, Duration::from_secs(900));
        assert_eq!(ok.max_deliveries, 5);
        assert!(ok.validate("source.vnet.events").is_ok());
        for bad in [
            "FlowLogs",
            "ab",
            "-events",
            "events-",
            "flow--events",
            "flow_events",
        ] {
            let e = events(bad).validate("source.vnet.events").unwrap_err();
            assert!(
                e.to_string().contains("source.vnet.events.queue"),
                "{bad}: {e}"
            );
        }
        let mut short = events("flowlog-events");
        short.visibility_timeout = Duration::from_secs(1);
        let e = short.validate("source.vnet.events").unwrap_err();
        assert!(e.to_string().contains("visibility_timeout"), "{e}");
    }
}
