//! Benchmark support: criterion benches and the load harness's helper binaries.
