//! The Weir plugin ABI: every constant, code and layout shared by the host
//! (`weir-proxy`) and the guest SDK (`weir-sdk`), so the two cannot drift.
//! The reference page is `sdk/ABI.md`.
#![no_std]

/// The ABI version this crate describes. A plugin exports the version it was
/// built against; the host refuses any other.
pub const ABI_VERSION: u32 = 1;
