//! Weir's host: listener, routing, upstream client, admin API and CLI.

pub mod plugin;
