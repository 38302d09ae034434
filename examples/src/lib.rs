//! Runnable set-ups for Weir; see `examples/README.md`. The library holds
//! the demo service, so that the walkthrough's test can serve it in process.

pub mod demo;
