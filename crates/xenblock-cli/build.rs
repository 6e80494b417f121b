//! The `xenblock` program's link: see [`static_unwinder_for_the_program`].
use std::path::{Path, PathBuf};

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
        static_unwinder_for_the_program(&out);
    }
}

/// Link the `xenblock` program against GCC's static unwinder (`libgcc_eh.a`)
/// instead of `libgcc_s.so.1`, as `gcc -static-libgcc` does for C programs;
/// glibc stays a shared library.
///
/// Xen runs the program for every disk event, and loading one more shared
/// library costs it ≈ 90 µs per run on the bench machine (drop-in prepare
/// at N=400: 1 554 → 1 460 µs; BENCHMARKS.md, "What a one-shot start costs"). Rust's standard library asks for `-lgcc_s` itself and has
/// no switch for this short of linking everything statically, so the
/// program's link gets a search directory in which `libgcc_s.so` is a linker
/// script naming `libgcc_eh.a`. Panics still unwind (the program catches
/// them and exits 101). The library (`libxenblock.so`) and the tests keep
/// the shared unwinder: a toolstack process has one already.
fn static_unwinder_for_the_program(out: &Path) {
    let dir = out.join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/static-unwinder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("write OUT_DIR/static-unwinder/libgcc_s.so");
    println!("cargo:rustc-link-arg-bin=xenblock=-L{}", dir.display());
}
