use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    // New or edited migrations must rebuild the binary that embeds them (`sqlx::migrate!`).
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=build.rs");
    if relr_links_and_runs() {
        // Packed relative relocations (DT_RELR): the dynamic loader reads a few KB of relocations
        // at start instead of the 1.4 MB `.rela.dyn` of a position-independent Chorus, and that
        // much less stays resident (about 1.2 MB of an idle process, whatever its size).
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C toolchain links with `-z pack-relative-relocs` and the result runs here: GNU ld
/// 2.38 or later (or lld 15, mold) and glibc 2.36 or later, checked on a one-line program rather
/// than assumed. Only for a native Linux/glibc build, where the probe can run what it linked.
fn relr_links_and_runs() -> bool {
    let target = env::var("TARGET").unwrap_or_default();
    if target != env::var("HOST").unwrap_or_default() || !target.contains("-linux-gnu") {
        return false;
    }
    let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else { return false };
    let (source, program) = (out.join("relr_probe.c"), out.join("relr_probe"));
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let compiler = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let linked = Command::new(compiler)
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .arg("-Wl,-z,pack-relative-relocs")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    linked && Command::new(&program).status().is_ok_and(|status| status.success())
}
