//! Links berth-lowrt as a position-dependent executable. It is exec'd twice per container
//! operation (the caller's exec, then the re-exec from a read-only copy, see
//! cloned_binary.rs); as a PIE, ld.so first applies tens of thousands of relative
//! relocations and write-protects ~300 KiB of RELRO on every start. Without PIE the
//! linker resolves them once; ASLR of the heap, stack and libraries is unaffected.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth-lowrt=-no-pie");
}
