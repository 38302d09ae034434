//! Test plugin: version 1 of a plugin swapped under load. It counts the
//! requests it saw (state carried across a swap by snapshot/restore) and
//! says its version and count in response headers.

const VERSION: &str = "1";

include!("../../swap-common.rs");
