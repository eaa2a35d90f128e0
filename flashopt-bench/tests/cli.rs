//! The command line where there is no GPU: help works, `run` says what it needs.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flashopt-bench"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_works_anywhere() {
    for args in [&["--help"][..], &["run", "--help"], &["report", "-h"]] {
        let out = bench(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with("usage:") && text.contains("flashopt-bench run"),
            "{text}"
        );
    }
    assert!(!bench(&[]).status.success());
}

#[test]
fn run_without_a_gpu_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("a GPU is present: `run` would measure it; skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("flashopt-bench-cli-{}", std::process::id()));
    let out = bench(&["run", "--out", dir.to_str().unwrap(), "--only", "4M"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("flashopt-bench: `run` needs a CUDA GPU and driver")
            && !err.contains("panicked"),
        "{err}"
    );
}
