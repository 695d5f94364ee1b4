//! Release builds of `graylane-sidecar` for x86_64 Linux place the functions a running
//! sidecar executes side by side at the start of `.text`, grouped by configuration and
//! hottest first, from `layout/graylane-sidecar.order` (written by
//! `bench/proxy/layout.sh`).
//!
//! Why: the kernel maps a binary's pages 64 KiB around each page fault, so code run
//! here and there across the 8 MiB of `.text` kept 6 MiB of it resident: most of an
//! idle sidecar's RSS (bench/README.md, "Sidecar memory"). Names the file lists that
//! the build no longer has are skipped: a stale order costs memory, never correctness.
//!
//! The flags are rust-lld's, rustc's default linker for that target, and the packed
//! relocations need glibc 2.36 at run time; `GRAYLANE_NO_LAYOUT=1` builds without
//! either.

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=layout/graylane-sidecar.order");
    println!("cargo::rerun-if-env-changed=GRAYLANE_NO_LAYOUT");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    if !release || !target || env::var_os("GRAYLANE_NO_LAYOUT").is_some() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = format!("{dir}/layout/graylane-sidecar.order");
    println!("cargo::rustc-link-arg-bin=graylane-sidecar=-Wl,--symbol-ordering-file={order}");
    println!("cargo::rustc-link-arg-bin=graylane-sidecar=-Wl,--no-warn-symbol-ordering");
    // Relative relocations packed (DT_RELR, glibc 2.36+): the dynamic loader reads
    // every one at start-up, 424 KiB of `.rela.dyn` that stayed resident.
    println!("cargo::rustc-link-arg-bin=graylane-sidecar=-Wl,-z,pack-relative-relocs");
}
