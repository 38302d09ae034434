//! The Weir guest SDK: write a policy plugin as one struct and one trait.
pub use weir_abi as abi;
