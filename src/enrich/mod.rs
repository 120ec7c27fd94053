//! Derived fields computed from a decoded tuple and its record (pure functions, no I/O).
