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
