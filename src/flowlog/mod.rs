//! Flow-log decoding: PT1H.json envelopes, records and tuples of NSG v1/v2 and VNet flow logs (pure, no I/O).
pub mod envelope;
pub mod kind;
pub mod protocol;
pub mod record;
pub mod tuple;

pub use envelope::{RecordScanner, ScanEnd, ScanEvent, ScanStart, Scanned};
pub use kind::FlowLogKind;
pub use record::{
    FlowGroup, ParsedSlot, Record, RecordError, SlotPosition, TupleArray, TupleSlot, TupleSlots,
    decode_record, decode_record_in,
};
pub use tuple::{
    DOCUMENTED_ENCRYPTION, Decision, Direction, FlowState, FlowTuple, TupleError, TupleErrorKind,
    parse_tuple,
};
