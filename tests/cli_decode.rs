//! `flowlogd decode` as a user runs it: the real binary on real samples and on broken input.
use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn flowlogd(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowlogd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowlogd");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn fixture_path(rel: &str) -> String {
    format!("{}/../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

#[test]
fn decodes_every_fixture_to_one_line_per_tuple() {
    let out = flowlogd(
        &[
            "decode",
            &fixture_path("msdocs/nsg_v1_PT1H.json"),
            &fixture_path("msdocs/nsg_v2_PT1H.json"),
            &fixture_path("msdocs/vnet_v4_PT1H.json"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out).len(), 12 + 11 + 19);
    assert!(out.stderr.is_empty());
}

#[test]
fn logstash_schema_and_bulk_output() {
    let out = flowlogd(
        &[
            "decode",
            "--schema",
            "logstash",
            "--bulk",
            "--index",
            "vnet-flow-logs-%{+xxxx.ww}",
            &fixture_path("elastic/vnet-PT1H.json"),
        ],
        None,
    );
    assert!(out.status.success());
    let l = lines(&out);
    assert_eq!(l.len(), 38);
    assert_eq!(l[0]["create"]["_index"], "vnet-flow-logs-2022.37");
    assert_eq!(l[1]["srcIp"], "10.0.0.6");
    assert_eq!(l[1]["VirtualNetwork"], "myVNet");
}

#[test]
fn resource_ids_blob_path_and_community_id_flags_write_what_the_source_options_would() {
    let file = fixture_path("msdocs/nsg_v2_PT1H.json");
    let decode = |flags: &[&str]| {
        let mut args = vec!["decode", "--container", "c", "--blob", "b/PT1H.json"];
        args.extend_from_slice(flags);
        args.push(&file);
        let out = flowlogd(&args, None);
        assert!(out.status.success());
        lines(&out).swap_remove(0)
    };
    // The sample's resourceId, copied by hand.
    let nsg_id = "/SUBSCRIPTIONS/aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e/RESOURCEGROUPS/FABRIKAMRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/FABRIAKMVM1-NSG";
    let lean = decode(&[]);
    assert!(lean["azure"]["flowlog"].get("resource_id").is_none());
    assert_eq!(lean["azure"]["flowlog"]["nsg"], "FABRIAKMVM1-NSG");
    assert_eq!(lean["azure"]["resource_group"], "FABRIKAMRG");
    // The pretty-printed head `{\n    "records": [\n        ` puts the record at byte 27.
    assert_eq!(lean["log"], serde_json::json!({"offset": 27}));
    // Python's `xxhash.xxh3_64_hexdigest(b"c\0b/PT1H.json")`.
    assert_eq!(lean["azure"]["flowlog"]["blob_id"], "27b39d9d4bda1243");
    assert!(lean["network"].get("community_id").is_none());
    let full = decode(&["--resource-ids"]);
    assert_eq!(full["azure"]["flowlog"]["resource_id"], nsg_id);
    assert_eq!(full["azure"]["flowlog"]["resource_group"], "FABRIKAMRG");
    let with_path = decode(&["--blob-path"]);
    assert_eq!(with_path["log"]["file"]["path"], "c/b/PT1H.json");
    let with_community = decode(&["--community-id"]);
    let community = with_community["network"]["community_id"].as_str().unwrap();
    assert!(
        community.starts_with("1:") && community.len() == 30,
        "{community}"
    );
}

#[test]
fn reads_stdin() {
    let bytes = std::fs::read(fixture_path("msdocs/nsg_v2_PT1H.json")).unwrap();
    let out = flowlogd(&["decode", "-"], Some(&bytes));
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 11);
}

#[test]
fn bad_tuples_are_reported_and_good_ones_still_printed() {
    let blob = br#"{"records":[{"time":"t","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r","flowTuples":["1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0","1663146003599,10.0.0.6,999.1.1.1,23956,443,6,O,B,NX,0,0,0,0","1663146003599,10.0.0.6,1.1.1.1,1,2,6,O,B,NX","1663146003599,10.0.0.6,1.1.1.1,1,2,6,O,E,NX,1,2,3,99999999999999999999999"]}]}]}}]}"#;
    let f = write_temp(blob);
    let out = flowlogd(&["decode", f.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out).len(), 1);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("offset 12"), "{stderr}");
    assert!(stderr.contains("bad destination IP"), "{stderr}");
    assert!(stderr.contains("9 fields"), "{stderr}");
    assert!(stderr.contains("bad counter in field 12"), "{stderr}");
    assert!(
        stderr.contains("999.1.1.1"),
        "the tuple text is shown: {stderr}"
    );
}

#[test]
fn truncated_file_keeps_complete_records_and_reports_the_cut() {
    let bytes = std::fs::read(fixture_path("elastic/nsg-PT1H.json")).unwrap();
    let cut = &bytes[..bytes.len() - 200];
    let f = write_temp(cut);
    let out = flowlogd(&["decode", f.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        lines(&out).len(),
        7,
        "the first record (7 tuples) is complete"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("file ends inside a record"), "{stderr}");
}

#[test]
fn garbage_invalid_utf8_and_broken_records_never_crash() {
    let inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00garbage".to_vec(),
        b"{\"records\":[{\"time\":\"\xff\xfe\",\"flowLogVersion\":4,\"flowRecords\":{\"flows\":[]}}]}".to_vec(),
        b"{\"records\":[{\"time\":1,\"flowLogVersion\":99999999999999,\"flowRecords\":{}}]}".to_vec(),
        b"{\"records\":[{\"properties\":{\"Version\":2,\"flows\":[{\"rule\":\"r\",\"flows\":[{\"mac\":\"m\",\"flowTuples\":[1,2]}]}]}}]}".to_vec(),
        b"{\"records\":[[[[]]]]}".to_vec(),
        b"".to_vec(),
    ];
    for input in inputs {
        let f = write_temp(&input);
        let out = flowlogd(&["decode", f.path().to_str().unwrap()], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "input {input:?}: {stderr}");
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "input {input:?}: {stderr}"
        );
        if !input.is_empty() {
            assert_eq!(
                out.status.code(),
                Some(1),
                "input {:?} must be reported: {stderr}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn bad_index_pattern_is_a_clear_error() {
    let out = flowlogd(
        &[
            "decode",
            "--index",
            "flows-%{+yyyy.QQ}",
            &fixture_path("msdocs/nsg_v1_PT1H.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--index") && stderr.contains("QQ"),
        "{stderr}"
    );
}

#[test]
fn generated_blob_decodes_to_exactly_the_generated_tuples() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, records, tuples) in [("vnet", 30, 17), ("nsg2", 12, 5), ("nsg1", 3, 40)] {
        let path = dir.path().join(format!("{kind}.json"));
        let out = flowlogd(
            &[
                "gen",
                "--kind",
                kind,
                "--records",
                &records.to_string(),
                "--tuples",
                &tuples.to_string(),
                "--seed",
                "9",
                "--out",
                path.to_str().unwrap(),
            ],
            None,
        );
        assert!(out.status.success());
        let decoded = flowlogd(&["decode", path.to_str().unwrap()], None);
        assert!(
            decoded.status.success(),
            "{}",
            String::from_utf8_lossy(&decoded.stderr)
        );
        assert_eq!(lines(&decoded).len(), records * tuples, "{kind}");
    }
}

// Issue 9, items 11 and 12: nothing is dropped without a count (invariant 9). Each variant is
// either accepted (its tuples are printed) or reported on stderr with its offset and exit code 1.

const VNET_TUPLE: &str = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0";
const NSG_TUPLE: &str = "1542110377,10.5.16.4,13.67.143.118,59831,443,T,O,A,B,,,,";

/// A compact VNet record whose tuple array is written verbatim (`tuples` is JSON array content).
fn vnet_record(tuples: &str) -> Vec<u8> {
    let mut r = br#"{"time":"2022-09-14T09:00:52Z","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r","flowTuples":["#.to_vec();
    r.extend_from_slice(tuples.as_bytes());
    r.extend_from_slice(b"]}]}]}}");
    r
}

fn vnet_tuples(n: usize) -> String {
    vec![format!("\"{VNET_TUPLE}\""); n].join(",")
}

fn envelope(records: &[&[u8]]) -> Vec<u8> {
    let mut blob = br#"{"records":["#.to_vec();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            blob.push(b',');
        }
        blob.extend_from_slice(r);
    }
    blob.extend_from_slice(b"]}");
    blob
}

fn decode_bytes(bytes: &[u8]) -> (Output, String) {
    let f = write_temp(bytes);
    let out = flowlogd(&["decode", f.path().to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out, stderr)
}

#[test]
fn inner_keys_in_upper_case_keep_their_tuples() {
    let nsg = format!(
        r#"{{"time":"t","resourceId":"/S","PROPERTIES":{{"VERSION":2,"FLOWS":[{{"RULE":"r","FLOWS":[{{"MAC":"000D3AF87856","FLOWTUPLES":["{NSG_TUPLE}","{NSG_TUPLE}"]}}]}}]}}}}"#
    );
    let vnet = format!(
        r#"{{"time":"t","FLOWLOGVERSION":4,"FLOWRECORDS":{{"FLOWS":[{{"ACLID":"a","FLOWGROUPS":[{{"RULE":"r","FLOWTUPLES":["{VNET_TUPLE}","{VNET_TUPLE}","{VNET_TUPLE}"]}}]}}]}}}}"#
    );
    let mixed = format!(
        r#"{{"time":"t","flowLogVersion":4,"flowRECORDS":{{"fLoWs":[{{"aclID":"a","FlowGROUPS":[{{"rule":"r","FlowTuples":["{VNET_TUPLE}"]}}]}}]}}}}"#
    );
    let (out, stderr) = decode_bytes(&envelope(&[
        nsg.as_bytes(),
        vnet.as_bytes(),
        mixed.as_bytes(),
    ]));
    assert_eq!(lines(&out).len(), 2 + 3 + 1, "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_renamed_flows_key_is_reported_with_its_offset_not_dropped_silently() {
    let renamed_nsg = format!(
        r#"{{"time":"t","properties":{{"Version":2,"flowz":[{{"rule":"r","flows":[{{"mac":"m","flowTuples":["{NSG_TUPLE}"]}}]}}]}}}}"#
    );
    let renamed_vnet_tuples = format!(
        r#"{{"time":"t","flowLogVersion":4,"flowRecords":{{"flows":[{{"aclID":"a","flowGroups":[{{"rule":"r","tuples":["{VNET_TUPLE}"]}}]}}]}}}}"#
    );
    let good = vnet_record(&vnet_tuples(2));
    let blob = envelope(&[
        renamed_nsg.as_bytes(),
        renamed_vnet_tuples.as_bytes(),
        &good,
    ]);
    let second = 12 + renamed_nsg.len() + 1;
    let (out, stderr) = decode_bytes(&blob);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(lines(&out).len(), 2, "the good record is kept: {stderr}");
    assert!(stderr.contains("offset 12:"), "{stderr}");
    assert!(stderr.contains(&format!("offset {second}:")), "{stderr}");
    assert!(stderr.contains("flows"), "{stderr}");
    assert!(stderr.contains("flowTuples"), "{stderr}");
}

#[test]
fn two_concatenated_documents_give_every_tuple() {
    let first = envelope(&[&vnet_record(&vnet_tuples(3))]);
    let second = envelope(&[&vnet_record(&vnet_tuples(2)), &vnet_record(&vnet_tuples(4))]);
    for separator in [&b""[..], b"\n", b"\r\n  \n"] {
        let mut blob = first.clone();
        blob.extend_from_slice(separator);
        blob.extend_from_slice(&second);
        let (out, stderr) = decode_bytes(&blob);
        assert_eq!(lines(&out).len(), 3 + 2 + 4, "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
}

#[test]
fn bytes_after_the_closing_bracket_are_reported_with_their_offset() {
    let mut blob = envelope(&[&vnet_record(&vnet_tuples(3))]);
    let end = blob.len();
    blob.extend_from_slice(br#"xyz, "records": 1"#);
    let (out, stderr) = decode_bytes(&blob);
    assert_eq!(lines(&out).len(), 3, "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("offset {end}:")), "{stderr}");
}

#[test]
fn garbage_before_a_good_record_is_reported_and_the_good_record_kept() {
    let good = vnet_record(&vnet_tuples(5));
    // (garbage, offset of the first problem reported, whether the good record survives)
    let cases: [(&[u8], usize, bool); 11] = [
        (b"]", 12, true),
        (b"[1,2]", 12, true),
        (b"\"a]b\"", 12, true),
        (b"1]", 12, true),
        (b"]]", 12, true),
        (b"}", 12, true),
        (b"null", 12, true),
        // An empty, closed envelope: what follows it (`,`) is the garbage.
        (b"]}", 14, true),
        (b"] }", 15, true),
        // A `{` inside a garbage string starts a record that swallows the good one: reported
        // as a cut record (not recovered, but counted).
        (b"\"x{y\"", 14, false),
        (b"{\"a\":\"", 12, false),
    ];
    for (garbage, offset, kept) in cases {
        let mut blob = br#"{"records":["#.to_vec();
        blob.extend_from_slice(garbage);
        blob.push(b',');
        blob.extend_from_slice(&good);
        blob.extend_from_slice(b"]}");
        let (out, stderr) = decode_bytes(&blob);
        let shown = String::from_utf8_lossy(garbage);
        if kept {
            assert_eq!(lines(&out).len(), 5, "garbage {shown}: {stderr}");
        }
        assert_eq!(out.status.code(), Some(1), "garbage {shown}: {stderr}");
        assert!(
            stderr.contains(&format!("offset {offset}:")),
            "garbage {shown} is reported at offset {offset}: {stderr}"
        );
    }
}

#[test]
fn one_bad_tuple_is_reported_and_the_other_tuples_of_its_record_are_printed() {
    let cases: [(&str, Vec<u8>); 5] = [
        ("a number", b"12345".to_vec()),
        ("an object", br#"{"a":[1,"x"]}"#.to_vec()),
        (
            "invalid UTF-8",
            b"\"1663146003599,10.0.0.6,\xff\xfe,1,2,6,O,B,NX,,,,\"".to_vec(),
        ),
        ("a NUL byte", format!("\"{VNET_TUPLE}\0\"").into_bytes()),
        (
            "a raw newline",
            b"\"1663146003599,10.0.0.6,\n1.1.1.1,1,2,6,O,B,NX,,,,\"".to_vec(),
        ),
    ];
    for (what, bad) in cases {
        let mut tuples = format!("\"{VNET_TUPLE}\",").into_bytes();
        tuples.extend_from_slice(&bad);
        tuples.extend_from_slice(format!(",\"{VNET_TUPLE}\",\"{VNET_TUPLE}\"").as_bytes());
        let mut record = br#"{"time":"2022-09-14T09:00:52Z","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r","flowTuples":["#.to_vec();
        record.extend_from_slice(&tuples);
        record.extend_from_slice(b"]}]}]}}");
        let (out, stderr) = decode_bytes(&envelope(&[&record]));
        assert_eq!(lines(&out).len(), 3, "{what}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one problem: {stderr}");
        assert!(
            stderr.contains("offset 12:") && stderr.contains("tuple 1:"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn a_utf8_bom_before_a_file_is_accepted() {
    for (rel, tuples) in [
        ("msdocs/vnet_v4_PT1H.json", 19),
        ("msdocs/nsg_v2_PT1H.json", 11),
    ] {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(&std::fs::read(fixture_path(rel)).unwrap());
        let (out, stderr) = decode_bytes(&bytes);
        assert_eq!(lines(&out).len(), tuples, "{rel}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{rel}: {stderr}");
    }
}

// Issue 9, item 15: a missing file among several is reported, and the files after it are
// still decoded.
#[test]
fn a_missing_file_among_several_is_reported_and_the_others_are_still_decoded() {
    let out = flowlogd(
        &[
            "decode",
            &fixture_path("msdocs/nsg_v1_PT1H.json"),
            "/nonexistent/PT1H.json",
            &fixture_path("msdocs/vnet_v4_PT1H.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "a missing file is a failure");
    assert_eq!(lines(&out).len(), 12 + 19, "both readable files decoded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/PT1H.json") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

// Issue 9, item 15: the README lists exactly the date tokens the parser accepts (its error
// message is the parser's own list).
#[test]
fn the_readme_lists_the_date_tokens_the_index_pattern_parser_accepts() {
    let out = flowlogd(
        &[
            "decode",
            "--index",
            "flows-%{+QQ}",
            &fixture_path("msdocs/nsg_v1_PT1H.json"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let listed = stderr
        .split("(supported: ")
        .nth(1)
        .and_then(|rest| rest.split(", 'quoted text')").next())
        .unwrap_or_else(|| panic!("no token list in: {stderr}"));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for token in listed.split(", ") {
        assert!(
            readme.contains(&format!("`{token}`")),
            "README does not list the accepted token `{token}`"
        );
    }
}

// Issue 9, item 15: counters are mapped `long`; one above i64::MAX would be refused by the
// engine document by document. No real flow carries 9.2 EB: such a tuple is reported here, as
// corrupt input, and the others of its record are kept.
#[test]
fn a_counter_above_the_long_range_is_reported_and_the_other_tuples_kept() {
    let huge = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,9223372036854775808,0,0";
    let fits = "1663146003599,10.0.0.6,52.239.184.180,23957,443,6,O,B,NX,0,9223372036854775807,0,0";
    let tuples = format!("\"{huge}\",\"{fits}\",\"{VNET_TUPLE}\"");
    let (out, stderr) = decode_bytes(&envelope(&[&vnet_record(&tuples)]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(lines(&out).len(), 2, "{stderr}");
    assert!(stderr.contains("bad counter in field 10"), "{stderr}");
}

/// `flowlogd decode big.json | head -1`: the reader goes away after one line. Before, the next
/// write failed with EPIPE and flowlogd logged `ERROR flowlogd failed error=Broken pipe` and
/// exited 1.
#[test]
fn a_reader_that_closes_the_pipe_early_ends_decode_quietly_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("PT1H.json");
    let generated = Command::new(env!("CARGO_BIN_EXE_flowlogd"))
        .args(["gen", "--records", "60", "--tuples", "400", "--out"])
        .arg(&blob)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowlogd"))
        .arg("decode")
        .arg(&blob)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with(b"{\"@timestamp\""));
    // 24,000 documents are far more than a pipe holds, so flowlogd is still writing.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
    assert!(out.status.success(), "{:?}", out.status);
}

#[test]
fn enrichment_tables_of_a_config_file_name_networks_and_drop_what_the_rules_drop() {
    // A daemon configuration: decode reads its enrichment tables and ignores the rest.
    let config = write_temp(
        br#"
[elasticsearch]
urls = ["http://127.0.0.1:9"]

[[network]]
name = "app-subnet"
cidrs = ["10.0.0.0/24"]

[[filter]]
name = "drop-40-74"
action = "drop"
destination_cidr = ["40.74.0.0/16"]
"#,
    );
    let config_path = config.path().to_str().unwrap();
    let out = flowlogd(
        &[
            "decode",
            "--enrichment",
            config_path,
            &fixture_path("msdocs/vnet_v4_PT1H.json"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let docs = lines(&out);
    // 19 tuples, 6 of them to 40.74.146.17 (counted by hand in the sample).
    assert_eq!(docs.len(), 19 - 6);
    assert_eq!(stderr.trim(), "filter drop-40-74: 6 tuple(s) dropped");
    for doc in &docs {
        let (inside, outside) = if doc["source"]["ip"] == "10.0.0.6" {
            ("source", "destination")
        } else {
            ("destination", "source")
        };
        assert_eq!(doc[inside]["network"]["name"], "app-subnet", "{doc}");
        assert!(doc[outside].get("network").is_none(), "{doc}");
    }

    // A lookup file that cannot be read stops the run and names the file.
    let broken = write_temp(b"[enrich]\ngeoip_file = \"/nonexistent/GeoLite2-City.mmdb\"\n");
    let out = flowlogd(
        &[
            "decode",
            "--enrichment",
            broken.path().to_str().unwrap(),
            &fixture_path("msdocs/vnet_v4_PT1H.json"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("/nonexistent/GeoLite2-City.mmdb"),
        "{stderr}"
    );
}
