//! Inputs that made a fuzz target (fuzz/, scripts/fuzz.sh) fail, kept as tests once the code
//! handles them. Findings still open are in fuzz/regressions/README.md, with their inputs.
use flowlogd::flowlog::{RecordScanner, ScanEvent, ScanStart};

/// (kind, offset, length) of every event of `input` fed in two pieces, cut at `cut`, with
/// records capped at `cap` bytes.
fn envelope_events(input: &[u8], cap: usize, cut: usize) -> Vec<(&'static str, u64, u64)> {
    let mut scanner = RecordScanner::new(0, ScanStart::Head).with_max_record_len(cap);
    let mut events = Vec::new();
    for piece in [&input[..cut], &input[cut..]] {
        scanner.feed(piece, &mut |event| {
            events.push(match event {
                ScanEvent::Head { len } => ("head", 0, len),
                ScanEvent::Record { offset, bytes } => ("record", offset, bytes.len() as u64),
                ScanEvent::Malformed { offset, len, .. } => ("malformed", offset, len),
                ScanEvent::Tail { offset } => ("tail", offset, 0),
            })
        });
    }
    events
}

/// envelope_chunking, fuzz/regressions/envelope_chunking-oversized-record-resumes-inside-it:
/// before 0ec2cfd a record over the cap was reported up to where the read happened to end
/// (138 bytes with a cut at 150, 218 fed whole), and the scan resumed inside it, taking its
/// inner object `{"z":1}` for a record.
#[test]
fn an_oversized_record_is_one_malformed_run_wherever_the_reads_end_and_its_inner_objects_are_not_records()
 {
    let mut input = br#"{"records":[{"time":"a","x":""#.to_vec();
    input.extend(std::iter::repeat_n(b'x', 200));
    input.extend_from_slice(br#"","y":{"z":1}},{"time":"b"}]}"#);
    for cut in 0..=input.len() {
        assert_eq!(
            envelope_events(&input, 100, cut),
            vec![
                ("head", 0, 12),
                ("malformed", 12, 231),
                ("record", 244, 12),
                ("tail", 256, 0),
            ],
            "cut at {cut}"
        );
    }
}

/// config_toml, fuzz/regressions/config_toml-a-syntax-error-shows-the-secret-line: the toml
/// crate's message quotes the line where parsing stopped, and figment passed it on, so a
/// syntax error on a password's line printed the password (invariant 7).
#[test]
fn a_toml_syntax_error_on_the_line_of_a_secret_names_the_line_but_not_the_secret() {
    for text in [
        "[elasticsearch]\npassword = \"correct-horse-battery\" staple\n",
        "[elasticsearch]\npassword = \"correct\\horse-battery\"\n",
        "[elasticsearch]\npassword = \"correct-horse-battery\n",
    ] {
        let message = flowlogd::config::Config::from_toml_str(text)
            .unwrap_err()
            .to_string();
        assert!(!message.contains("horse"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

/// config_toml, fuzz/regressions/config_toml-a-secret-written-as-a-number-is-shown: figment's
/// type error quoted the value it found, so a numeric password written without quotes was
/// printed (invariant 7).
#[test]
fn a_secret_written_without_quotes_is_refused_without_showing_it() {
    for text in [
        "[elasticsearch]\npassword = 20240101\n",
        "[[source]]\nname = \"a\"\ncontainer = \"c\"\n[source.auth]\nmethod = \"sas\"\nsas_token = 1234567890\n[elasticsearch]\n",
    ] {
        let message = flowlogd::config::Config::from_toml_str(text)
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains("20240101") && !message.contains("1234567890"),
            "{message}"
        );
        assert!(
            message.contains("integer"),
            "says what was found: {message}"
        );
    }
}

/// index_pattern, fuzz/regressions/index_pattern-name-longer-than-255-bytes-later-in-the-year:
/// the length was checked on a January-1st name, where unpadded fields have one digit; on
/// December 31st at 23h the same pattern gives 258 bytes, which the engine refuses.
#[test]
fn an_index_pattern_whose_names_exceed_255_bytes_later_in_the_year_is_refused() {
    let pattern = format!("{}-%{{+M.d.H}}", "a".repeat(249));
    assert!(flowlogd::index_pattern::IndexPattern::parse(&pattern).is_err());
    let fits = format!("{}-%{{+M.d.H}}", "a".repeat(246));
    assert!(flowlogd::index_pattern::IndexPattern::parse(&fits).is_ok());
}

/// listing_xml, fuzz/regressions/listing_xml-a-blank-name-is-listed-empty: quick-xml's serde
/// deserializer drops a text node that is only whitespace, so a blob named " " was listed as
/// "" and never read.
#[test]
fn a_blob_name_made_only_of_whitespace_is_listed_as_it_is() {
    let xml = br#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs><Blob><Name> </Name><Properties><Last-Modified>Tue, 04 Nov 2025 11:00:00 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>0</Content-Length></Properties></Blob><BlobPrefix><Name>&#9;</Name></BlobPrefix></Blobs><NextMarker /></EnumerationResults>"#;
    let page = flowlogd::source::listing::parse_list_page(xml).unwrap();
    assert_eq!(page.blobs[0].name, " ");
    assert_eq!(page.prefixes, vec!["\t".to_owned()]);
}
