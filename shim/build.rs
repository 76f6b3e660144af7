//! Links berth-shim as a position-dependent executable.
//!
//! A PIE's vtables and other pointer tables (.data.rel.ro) are patched by the dynamic
//! loader at every start, which turns each of those pages into private dirty memory:
//! about 150 kB in every shim process. Linked at a fixed address they stay clean pages of
//! the file, shared by all shims (docs/shim.md, "Memory"). The cost is no ASLR for the
//! shim's own code; libraries, heap and stack are still randomized.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
