//! End-to-end tests across crates live beside this file; this library holds nothing.
