//! The blob naming scheme Network Watcher writes flow logs under:
//! `{resource}/y=YYYY/m=MM/d=DD/h=HH/m=00/macAddress=…/PT1H.json`, and the hour partitions it
//! implies. A shared leaf (names only, no I/O): the walker, the poller and `tail` read it.

/// Seconds in an hour; hours are counted as `epoch_seconds / 3600` (UTC, like the folders).
pub const HOUR_SECS: i64 = 3600;

/// The resource prefix of a flow-log blob name: everything before `y=YYYY/`, ending in `/`.
pub fn resource_of(blob: &str) -> Option<&str> {
    let at = if blob.starts_with("y=") {
        Some(0)
    } else {
        blob.rfind("/y=").map(|i| i + 1)
    }?;
    Some(&blob[..at])
}

/// The hour (epoch hours) of a flow-log blob from its `y=/m=/d=/h=` folders; `None` when the
/// name has no such partition. The first `m=` is the month, the second (always `00`) the minute.
pub fn blob_hour(blob: &str) -> Option<i64> {
    let resource = resource_of(blob)?;
    let rest = &blob[resource.len()..];
    let mut parts = rest.split('/');
    let mut field = |key: &str| -> Option<u32> { parts.next()?.strip_prefix(key)?.parse().ok() };
    let (y, m, d, h) = (field("y=")?, field("m=")?, field("d=")?, field("h=")?);
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, m, d)?;
    let time = date.and_hms_opt(h, 0, 0)?;
    Some(time.and_utc().timestamp().div_euclid(HOUR_SECS))
}

/// The partition prefix of one hour of one resource: `{resource}y=2026/m=11/d=21/h=16/`.
pub fn hour_partition(resource: &str, hour: i64) -> String {
    let t = chrono::DateTime::from_timestamp(hour * HOUR_SECS, 0).unwrap_or_default();
    format!("{resource}{}", t.format("y=%Y/m=%m/d=%d/h=%H/"))
}

/// The partition prefix of the hour a blob is in (`None` for names without one).
pub fn partition_of(blob: &str) -> Option<String> {
    Some(hour_partition(resource_of(blob)?, blob_hour(blob)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NSG: &str = "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG1/y=2026/m=11/d=21/h=16/m=00/macAddress=000D3AF87856/PT1H.json";
    const VNET: &str = "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/y=2020/m=12/d=31/h=23/m=00/macAddress=00224871C205/PT1H.json";

    #[test]
    fn resource_and_hour_come_from_the_end_of_the_name() {
        assert_eq!(
            resource_of(NSG),
            Some(
                "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG1/"
            )
        );
        // 2026-11-21T16:00:00Z = 1795276800 s.
        assert_eq!(blob_hour(NSG), Some(1_795_276_800 / 3600));
        // 2020-12-31T23:00:00Z = 1609455600 s.
        assert_eq!(blob_hour(VNET), Some(1_609_455_600 / 3600));
        assert_eq!(
            resource_of("y=2026/m=01/d=01/h=00/m=00/macAddress=X/PT1H.json"),
            Some("")
        );
        assert_eq!(blob_hour("no/partition/PT1H.json"), None);
        assert_eq!(blob_hour("r/y=2026/m=13/d=01/h=00/PT1H.json"), None);
        assert_eq!(blob_hour("r/y=2026/m=02/d=30/h=00/PT1H.json"), None);
        assert_eq!(blob_hour("r/y=2026/m=02/d=28/h=24/PT1H.json"), None);
    }

    #[test]
    fn partition_prefixes_round_trip() {
        let hour = blob_hour(NSG).unwrap();
        let partition = hour_partition(resource_of(NSG).unwrap(), hour);
        assert!(NSG.starts_with(&partition), "{partition}");
        assert_eq!(
            partition_of(VNET).unwrap(),
            "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/y=2020/m=12/d=31/h=23/"
        );
    }
}
