//! A string that never shows itself in logs, errors or metrics.
