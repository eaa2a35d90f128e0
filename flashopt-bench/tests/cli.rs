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
    for (args, names) in [
        (&["--help"][..], "Usage: flashopt-bench <COMMAND>"),
        (&["run", "--help"], "--only <ONLY>"),
        (&["report", "-h"], "<DIR>"),
    ] {
        let out = bench(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(names), "{args:?}: {text}");
    }
    assert!(!bench(&[]).status.success());
}

/// Unknown flags and filters that name nothing are errors, before any GPU is needed.
#[test]
fn unknown_flags_and_filters_are_errors() {
    let out = bench(&["run", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unexpected argument '--bogus'")
    );
    let out = bench(&["run", "--only", "268M,Bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("flashopt-bench: --only Bogus: not one of"),
        "{err}"
    );
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
