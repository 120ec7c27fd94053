//! Flow-log record decoding.
