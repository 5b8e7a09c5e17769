//! Links `dso-init` statically so that it runs in images with no libc (`FROM scratch`).
//! rustc links std-less binaries with `-nodefaultlibs` and `-pie`; we ask for a classic
//! static executable and pull libc from its static archive.
fn main() {
    for arg in [
        "-no-pie",
        "-static",
        "-Wl,-Bstatic",
        "-Wl,--start-group",
        "-lc",
        "-lgcc",
        "-lgcc_eh",
        "-Wl,--end-group",
    ] {
        println!("cargo::rustc-link-arg-bin=dso-init={arg}");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
