//! Placeholder: the SSE parser lands here (owned by the parser work).
