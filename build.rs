//! Generates `include/xenblock.h` from the `extern "C"` items in `src/ffi/`,
//! and gives the shared library its SONAME.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // The SONAME carries the ABI major version (src/ffi/mod.rs XENBLOCK_ABI_MAJOR).
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxenblock.so.1");
    }
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => {
            b.write_to_file(dir.join("include/xenblock.h"));
        }
        Err(e) => println!("cargo:warning=cbindgen: {e}"),
    }
}
