//! Golden tests on every real sample in `../shared/fixtures/`: tuple counts and field values
//! checked by hand against the raw JSON, and a cross-check with Elastic's expected outputs.
use std::collections::HashSet;
use std::path::PathBuf;

use flowlogd::bulk_buffer::BulkBuffer;

use flowlogd::config::document::{Provenance, Schema};
use flowlogd::encode::document::{BlobContext, DocumentEncoder};
use flowlogd::index_pattern::IndexPattern;
use flowlogd::pipeline::{BlobDecoder, DecodeProblem};
use flowlogd::sink::template::ECS_CONSTANTS;
use serde_json::Value;

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Decoded {
    docs: Vec<Value>,
    ids: Vec<String>,
    indices: Vec<String>,
    problems: Vec<DecodeProblem>,
}

fn decode_bytes(bytes: &[u8], blob: &str, chunk: usize) -> Decoded {
    decode_bytes_with(bytes, blob, chunk, Provenance::default())
}

/// `resource_ids = true`: every id a record holds.
const WITH_IDS: Provenance = Provenance {
    resource_ids: true,
    blob_path: true,
};

fn decode_bytes_with(bytes: &[u8], blob: &str, chunk: usize, provenance: Provenance) -> Decoded {
    let mut encoder = DocumentEncoder::new(
        Schema::Ecs,
        IndexPattern::parse("flows-%{+xxxx.ww}").unwrap(),
    )
    .with_provenance(provenance);
    let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new("insights-logs", blob), 0);
    let mut out = BulkBuffer::new();
    let mut problems = Vec::new();
    for piece in bytes.chunks(chunk) {
        decoder.feed(piece, &mut out, &mut |p| problems.push(p));
    }
    assert_eq!(decoder.finish().partial_record_bytes, 0);
    let mut decoded = Decoded {
        docs: vec![],
        ids: vec![],
        indices: vec![],
        problems,
    };
    for (i, item) in out.items.iter().enumerate() {
        let action: Value =
            serde_json::from_slice(&out.body[item.action_start..item.doc_start]).unwrap();
        decoded
            .ids
            .push(action["create"]["_id"].as_str().unwrap().to_owned());
        decoded
            .indices
            .push(action["create"]["_index"].as_str().unwrap().to_owned());
        decoded
            .docs
            .push(serde_json::from_slice(out.doc(i)).unwrap());
    }
    decoded
}

fn decode_fixture(rel: &str) -> Decoded {
    let bytes = fixture(rel);
    let whole = decode_bytes(&bytes, rel, bytes.len());
    // Chunking must not change anything: the reader sees arbitrary network chunks.
    for chunk in [1, 7, 4096] {
        let again = decode_bytes(&bytes, rel, chunk);
        assert_eq!(again.ids, whole.ids, "{rel} in chunks of {chunk}");
        assert_eq!(again.docs, whole.docs, "{rel} in chunks of {chunk}");
    }
    let unique: HashSet<_> = whole.ids.iter().collect();
    assert_eq!(unique.len(), whole.ids.len(), "{rel}: ids must be unique");
    whole
}

fn count(docs: &[Value], pointer: &str, value: &str) -> usize {
    docs.iter()
        .filter(|d| d.pointer(pointer).and_then(Value::as_str) == Some(value))
        .count()
}

fn sum(docs: &[Value], pointer: &str) -> u64 {
    docs.iter()
        .filter_map(|d| d.pointer(pointer).and_then(Value::as_u64))
        .sum()
}

#[test]
fn msdocs_nsg_v1_twelve_eight_field_tuples() {
    let d = decode_fixture("msdocs/nsg_v1_PT1H.json");
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.docs.len(), 12);
    let first = &d.docs[0];
    // "1487282421,42.119.146.95,10.1.0.4,51529,5358,T,I,D" under DefaultRule_DenyAllInBound.
    assert_eq!(first["@timestamp"], "2017-02-16T22:00:21.000Z");
    assert_eq!(first["source"]["ip"], "42.119.146.95");
    assert_eq!(first["source"]["port"], 51529);
    assert_eq!(first["destination"]["ip"], "10.1.0.4");
    assert_eq!(first["destination"]["port"], 5358);
    assert_eq!(first["network"]["transport"], "tcp");
    assert_eq!(first["network"]["direction"], "inbound");
    assert_eq!(first["event"]["action"], "deny");
    assert_eq!(first["rule"]["name"], "DefaultRule_DenyAllInBound");
    assert_eq!(first["azure"]["flowlog"]["mac"], "00-0D-3A-F8-80-1A");
    assert_eq!(first["azure"]["flowlog"]["nsg"], "FABRIAKMVM1-NSG");
    assert_eq!(first["azure"]["flowlog"]["version"], 1);
    assert_eq!(first["azure"]["resource_group"], "FABRIKAMRG");
    assert_eq!(
        first["cloud"]["account"]["id"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert!(
        first["azure"]["flowlog"].get("state").is_none(),
        "v1 has no state"
    );
    assert!(
        first["source"].get("packets").is_none(),
        "v1 has no counters"
    );
    // Last tuple: "1487282512,91.224.160.154,10.1.0.4,59046,3389,T,I,A".
    let last = &d.docs[11];
    assert_eq!(last["@timestamp"], "2017-02-16T22:01:52.000Z");
    assert_eq!(last["source"]["ip"], "91.224.160.154");
    assert_eq!(last["destination"]["port"], 3389);
    assert_eq!(last["event"]["action"], "allow");
    assert_eq!(last["rule"]["name"], "UserRule_default-allow-rdp");
    // One U tuple: "1487282481,195.78.210.194,10.1.0.4,53,1732,U,I,D".
    assert_eq!(count(&d.docs, "/network/transport", "udp"), 1);
    assert_eq!(count(&d.docs, "/event/action", "deny"), 4);
    assert_eq!(count(&d.docs, "/event/action", "allow"), 8);
    // Three records at distinct offsets.
    let offsets: HashSet<u64> = d
        .docs
        .iter()
        .map(|x| x["log"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 3);
    assert!(
        offsets.contains(&12),
        "the first record starts right after the 12-byte head"
    );
    assert!(
        d.indices.iter().all(|i| i == "flows-2017.07"),
        "2017-02-16 is in ISO week 7"
    );
}

#[test]
fn msdocs_nsg_v2_eleven_tuples_with_empty_counters_on_begin_rows() {
    let d = decode_fixture("msdocs/nsg_v2_PT1H.json");
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.docs.len(), 11);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "begin"), 8);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "end"), 2);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "continuing"), 1);
    assert_eq!(count(&d.docs, "/event/action", "deny"), 7);
    // E 66+66, C 16978+14008, E 8489+7054.
    assert_eq!(sum(&d.docs, "/network/bytes"), 132 + 30986 + 15543);
    assert_eq!(sum(&d.docs, "/source/packets"), 1 + 30 + 15);
    let begin_rows = d
        .docs
        .iter()
        .filter(|x| x["azure"]["flowlog"]["state"] == "begin");
    for row in begin_rows {
        assert!(
            row["network"].get("bytes").is_none(),
            "B rows have empty counters: {row}"
        );
    }
    // "1542110379,10.5.16.4,203.0.113.115,44931,443,T,O,A,C,30,16978,24,14008"
    let c = d
        .docs
        .iter()
        .find(|x| x["azure"]["flowlog"]["state"] == "continuing")
        .unwrap();
    assert_eq!(c["@timestamp"], "2018-11-13T11:59:39.000Z");
    assert_eq!(c["destination"]["ip"], "203.0.113.115");
    assert_eq!(c["source"]["bytes"], 16978);
    assert_eq!(c["destination"]["packets"], 24);
    assert_eq!(c["destination"]["bytes"], 14008);
    assert_eq!(c["rule"]["name"], "DefaultRule_AllowInternetOutBound");
    assert_eq!(
        c["cloud"]["account"]["id"],
        "aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e"
    );
    assert_eq!(c["azure"]["flowlog"]["flow_type"], "private-to-public");
}

#[test]
fn msdocs_vnet_v4_pretty_printed_nineteen_tuples() {
    let d = decode_fixture("msdocs/vnet_v4_PT1H.json");
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.docs.len(), 19);
    assert_eq!(count(&d.docs, "/event/action", "deny"), 9);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "deny"), 9);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "begin"), 5);
    assert_eq!(count(&d.docs, "/azure/flowlog/state", "end"), 5);
    assert_eq!(count(&d.docs, "/azure/flowlog/encryption", "NX"), 19);
    assert_eq!(
        sum(&d.docs, "/network/bytes"),
        2347 + 5274 + 5274 + 242 + 34683
    );
    // Denied rows carry 0,0,0,0: zeros are kept.
    let denied = d
        .docs
        .iter()
        .find(|x| x["event"]["action"] == "deny")
        .unwrap();
    assert_eq!(denied["network"]["bytes"], 0);
    // "1663145989563,20.106.221.10,10.0.0.6,50557,44357,6,I,D,NX,0,0,0,0" under rule "Internet".
    let internet: Vec<_> = d
        .docs
        .iter()
        .filter(|x| x["rule"]["name"] == "Internet")
        .collect();
    assert_eq!(internet.len(), 7);
    assert_eq!(internet[0]["@timestamp"], "2022-09-14T08:59:49.563Z");
    assert_eq!(internet[0]["source"]["ip"], "20.106.221.10");
    assert_eq!(internet[0]["destination"]["port"], 44357);
    assert_eq!(
        internet[0]["azure"]["flowlog"]["acl_id"],
        "01020304-abcd-ef00-1234-102030405060"
    );
    let first = &d.docs[0];
    assert_eq!(first["azure"]["flowlog"]["mac"], "00-22-48-71-C2-05");
    assert_eq!(first["azure"]["flowlog"]["vnet"], "myVNet");
    assert_eq!(first["azure"]["flowlog"]["name"], "VNETFLOWLOG");
    assert_eq!(first["azure"]["resource_group"], "myResourceGroup");
    assert_eq!(
        first["cloud"]["account"]["id"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(first["cloud"]["region"], "eastus2euap");
    // The pretty-printed head `{\n    "records": [\n        ` puts the record at byte 27.
    assert_eq!(first["log"]["offset"], 27);
    // Python's `xxhash.xxh3_64_hexdigest(b"insights-logs\0msdocs/vnet_v4_PT1H.json")`.
    assert_eq!(first["azure"]["flowlog"]["blob_id"], "e3ce9c3c306ec452");
    assert!(
        first["log"].get("file").is_none(),
        "blob_path is off by default"
    );
}

#[test]
fn a_vnet_fixture_document_has_the_parsed_names_but_the_long_ids_only_when_resource_ids_asks() {
    let rel = "msdocs/vnet_v4_PT1H.json";
    let lean = decode_fixture(rel);
    let first = &lean.docs[0]["azure"]["flowlog"];
    for key in [
        "resource_id",
        "target_resource_id",
        "guid",
        "network_watcher",
        "resource_group",
    ] {
        assert!(first.get(key).is_none(), "{key} at the default: {first}");
    }
    // What the ids hold is there by name.
    assert_eq!(first["name"], "VNETFLOWLOG");
    assert_eq!(first["vnet"], "myVNet");
    assert_eq!(lean.docs[0]["cloud"]["region"], "eastus2euap");

    let bytes = fixture(rel);
    let full = decode_bytes_with(&bytes, rel, bytes.len(), WITH_IDS);
    let first = &full.docs[0]["azure"]["flowlog"];
    // Copied by hand from the fixture's record.
    assert_eq!(
        first["resource_id"],
        "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS2EUAP/FLOWLOGS/VNETFLOWLOG"
    );
    assert_eq!(
        first["target_resource_id"],
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/virtualNetworks/myVNet"
    );
    assert_eq!(first["guid"], "abcdef01-2345-6789-0abc-def012345678");
    assert_eq!(first["network_watcher"], "NETWORKWATCHER_EASTUS2EUAP");
    assert_eq!(first["resource_group"], "NETWORKWATCHERRG");
    assert_eq!(first["acl_id"], "00000000-1234-abcd-ef00-c1c2c3c4c5c6");
    assert_eq!(first["name"], "VNETFLOWLOG");
    assert_eq!(full.ids, lean.ids, "the option changes contents, never ids");
}

#[test]
fn elastic_whole_blobs_decode_to_every_tuple() {
    let nsg = decode_fixture("elastic/nsg-PT1H.json");
    assert!(nsg.problems.is_empty());
    assert_eq!(nsg.docs.len(), 11);
    assert_eq!(nsg.docs[0]["source"]["ip"], "94.102.49.190");
    let vnet = decode_fixture("elastic/vnet-PT1H.json");
    assert!(vnet.problems.is_empty());
    assert_eq!(vnet.docs.len(), 19);
    assert_eq!(vnet.docs[18]["source"]["ip"], "20.106.221.10");
    assert_eq!(vnet.docs[18]["destination"]["port"], 31244);
}

/// Elastic's pipeline makes one document per record with arrays; ours makes one per tuple.
/// Compare the values both produce, tuple by tuple, from Elastic's nested `tuples` output.
fn compare_with_elastic(records: &str, expected: &str, log_key: &str) {
    // With every id, to compare them too.
    let bytes = fixture(records);
    let d = decode_bytes_with(&bytes, records, bytes.len(), WITH_IDS);
    let expected: Value = serde_json::from_slice(&fixture(expected)).unwrap();
    let expected = &expected["expected"][0];
    let ours = &d.docs;
    assert_eq!(
        ours[0]["cloud"]["account"]["id"],
        expected["azure"]["subscription_id"]
    );
    // `cloud.provider` is a constant of the index, not of each document.
    assert!(ours[0]["cloud"].get("provider").is_none());
    let provider = ECS_CONSTANTS
        .iter()
        .find(|(path, _)| *path == "cloud.provider")
        .map(|(_, value)| *value);
    assert_eq!(provider, expected["cloud"]["provider"].as_str());
    assert_eq!(
        ours[0]["azure"]["flowlog"]["resource_id"],
        expected["azure"]["resource"]["id"]
    );
    // Elastic reports the resource group of the flow-log resource (NSG, or NetworkWatcherRG).
    let rg = expected["azure"]["resource"]["group"].as_str().unwrap();
    assert_eq!(ours[0]["azure"]["flowlog"]["resource_group"], rg);
    let log = &expected[log_key]["log"];
    let (flows, groups_key) = if log_key.ends_with("nsg") {
        (&log["properties"]["flows"], "flows")
    } else {
        (&log["records"]["flows"], "groups")
    };
    let mut i = 0;
    for flow in flows.as_array().unwrap() {
        for group in flow[groups_key].as_array().unwrap() {
            let rule = flow.get("rule").or(group.get("rule")).unwrap();
            for t in group["tuples"].as_array().unwrap() {
                let o = &ours[i];
                i += 1;
                assert_eq!(&o["rule"]["name"], rule);
                assert_eq!(o["@timestamp"], t["timestamp"]);
                assert_eq!(o["source"]["ip"], t["source"]["ip"]);
                assert_eq!(o["source"]["port"], t["source"]["port"]);
                assert_eq!(o["destination"]["ip"], t["destination"]["ip"]);
                assert_eq!(o["destination"]["port"], t["destination"]["port"]);
                assert_eq!(o["source"]["packets"], t["packets"]["sent"]);
                assert_eq!(o["source"]["bytes"], t["bytes"]["sent"]);
                assert_eq!(o["destination"]["packets"], t["packets"]["received"]);
                assert_eq!(o["destination"]["bytes"], t["bytes"]["received"]);
                let direction = t
                    .pointer("/traffic/flow")
                    .or(t.pointer("/flow/direction"))
                    .unwrap();
                assert_eq!(
                    o["network"]["direction"].as_str().unwrap(),
                    direction.as_str().unwrap().to_lowercase()
                );
                let state = t
                    .pointer("/flow_state")
                    .or(t.pointer("/flow/state"))
                    .unwrap();
                assert_eq!(
                    o["azure"]["flowlog"]["state"].as_str().unwrap(),
                    state.as_str().unwrap().to_lowercase()
                );
                if let Some(proto) = t["protocol"].as_str() {
                    // Elastic writes VNet protocols by number; ours names the ones with a
                    // name (only TCP and UDP occur in these samples).
                    let named = match proto {
                        "6" => "tcp",
                        "17" => "udp",
                        other => other,
                    };
                    assert_eq!(o["network"]["transport"], named.to_lowercase());
                    assert!(o["network"].get("iana_number").is_none());
                }
                if let Some(decision) = t.pointer("/traffic/decision") {
                    let expected_action = if decision == "Allowed" {
                        "allow"
                    } else {
                        "deny"
                    };
                    assert_eq!(o["event"]["action"], expected_action);
                }
                if let Some(enc) = t.pointer("/flow/encryption") {
                    assert_eq!(&o["azure"]["flowlog"]["encryption"], enc);
                }
            }
        }
    }
    assert_eq!(i, ours.len(), "every tuple compared");
    // Elastic normalises the MAC the same way (upper case, dashes).
    let mac = expected["source"]["mac"]
        .as_str()
        .or_else(|| expected["source"]["mac"][0].as_str())
        .unwrap();
    assert_eq!(ours[0]["azure"]["flowlog"]["mac"], mac);
}

#[test]
fn nsg_values_match_elastic_expected_output() {
    compare_with_elastic(
        "elastic/nsg-records.ndjson",
        "elastic/nsg-records.expected.json",
        "azure_network_watcher_nsg",
    );
}

#[test]
fn vnet_values_match_elastic_expected_output() {
    compare_with_elastic(
        "elastic/vnet-records.ndjson",
        "elastic/vnet-records.expected.json",
        "azure_network_watcher_vnet",
    );
}

#[test]
fn duplicated_record_gives_two_sets_of_documents_with_distinct_ids() {
    // A quirk of real captures: the same record appears twice in a blob.
    let record = fixture("elastic/vnet-records.ndjson");
    let record = std::str::from_utf8(&record).unwrap().trim();
    let blob = format!("{{\"records\":[{record},{record}]}}");
    let d = decode_bytes(blob.as_bytes(), "dup/PT1H.json", 64);
    assert_eq!(d.docs.len(), 4);
    let unique: HashSet<_> = d.ids.iter().collect();
    assert_eq!(unique.len(), 4);
    assert_eq!(d.docs[0]["source"], d.docs[2]["source"]);
    assert_ne!(d.docs[0]["log"]["offset"], d.docs[2]["log"]["offset"]);
}

#[test]
fn ids_are_stable_across_runs_and_differ_across_blobs() {
    let bytes = fixture("msdocs/vnet_v4_PT1H.json");
    let a = decode_bytes(&bytes, "a/PT1H.json", 100);
    let b = decode_bytes(&bytes, "a/PT1H.json", 3);
    let c = decode_bytes(&bytes, "b/PT1H.json", 100);
    assert_eq!(a.ids, b.ids);
    assert!(a.ids.iter().all(|id| !c.ids.contains(id)));
}

/// Every real sample, rewritten the ways issue 9 found tuples lost: container keys in upper case,
/// a UTF-8 byte order mark in front, the whole document twice in one file.
#[test]
fn every_fixture_keeps_every_tuple_with_upper_case_keys_a_bom_or_concatenated() {
    for rel in [
        "msdocs/nsg_v1_PT1H.json",
        "msdocs/nsg_v2_PT1H.json",
        "msdocs/vnet_v4_PT1H.json",
        "elastic/nsg-PT1H.json",
        "elastic/vnet-PT1H.json",
    ] {
        let bytes = fixture(rel);
        let base = decode_fixture(rel);
        assert!(base.problems.is_empty(), "{rel}: {:?}", base.problems);
        assert!(!base.docs.is_empty());

        // Same length, so the documents (offsets included) must be identical.
        let mut upper = String::from_utf8(bytes.clone()).unwrap();
        for key in [
            "flowTuples",
            "flowGroups",
            "flowRecords",
            "flows",
            "properties",
        ] {
            upper = upper.replace(
                &format!("\"{key}\""),
                &format!("\"{}\"", key.to_uppercase()),
            );
        }
        assert_ne!(upper.as_bytes(), &bytes[..]);
        let d = decode_bytes(upper.as_bytes(), rel, 7);
        assert!(d.problems.is_empty(), "{rel} upper case: {:?}", d.problems);
        assert_eq!(d.docs, base.docs, "{rel} upper case");

        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(&bytes);
        let d = decode_bytes(&bom, rel, 5);
        assert!(d.problems.is_empty(), "{rel} with BOM: {:?}", d.problems);
        assert_eq!(d.docs.len(), base.docs.len(), "{rel} with BOM");

        let mut twice = bytes.clone();
        twice.push(b'\n');
        twice.extend_from_slice(&bytes);
        let d = decode_bytes(&twice, rel, 4096);
        assert!(d.problems.is_empty(), "{rel} twice: {:?}", d.problems);
        assert_eq!(d.docs.len(), 2 * base.docs.len(), "{rel} twice");
        let unique: HashSet<_> = d.ids.iter().collect();
        assert_eq!(unique.len(), d.ids.len(), "{rel} twice: ids stay unique");
    }
}
