//! Placeholder smoke test (owned by the test-rig work).
