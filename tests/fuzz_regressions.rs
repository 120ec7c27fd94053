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
