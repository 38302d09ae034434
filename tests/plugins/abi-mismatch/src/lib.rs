//! Claims ABI version 999: the loader must refuse it, naming both versions.
//! Written without the SDK, which would export the right version.

#[unsafe(no_mangle)]
extern "C" fn weir_abi_version() -> i32 {
    999
}

#[unsafe(no_mangle)]
extern "C" fn weir_configure(_len: i32) -> i32 {
    0
}
