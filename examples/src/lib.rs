//! Runnable set-ups for Weir; see `examples/README.md`. The library part is
//! empty: the crate exists for its `demo-upstream` binary.
