//! The committed generated files are what the generator writes from the committed models.

use std::process::Command;

#[test]
fn generated_files_are_up_to_date() {
    let output = Command::new(env!("CARGO_BIN_EXE_millrace-codegen"))
        .arg("--check")
        .output()
        .expect("the generator runs");
    assert!(
        output.status.success(),
        "generated files are stale; run `cargo run -p millrace-codegen`:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
