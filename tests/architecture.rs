//! The layering docs/ARCHITECTURE.md draws, checked on the manifests: the IR depends on
//! no other flashopt crate, the runtime on the IR alone and on no GPU crate, so that
//! the step protocol and the CPU reference build (and are tested) without cubecl.

fn dependencies(manifest: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies && !line.starts_with('#') {
            // `name = ..` or `name.workspace = true`
            if let Some((key, _)) = line.split_once('=') {
                let name = key.trim().trim_end_matches(".workspace");
                names.push(name.to_string());
            }
        }
    }
    assert!(!names.is_empty(), "{manifest} lists no dependencies");
    names
}

#[test]
fn the_runtime_depends_on_no_gpu_crate() {
    let deps = dependencies("flashopt-runtime/Cargo.toml");
    for gpu in ["cubecl", "cudarc", "flashopt-cubecl"] {
        assert!(
            !deps.iter().any(|d| d.starts_with(gpu)),
            "flashopt-runtime depends on {gpu}: {deps:?}"
        );
    }
    let flashopt: Vec<&String> = deps.iter().filter(|d| d.starts_with("flashopt")).collect();
    assert_eq!(
        flashopt,
        ["flashopt-ir"],
        "the runtime stands on the IR alone"
    );
}

#[test]
fn the_ir_depends_on_no_other_flashopt_crate() {
    let deps = dependencies("flashopt-ir/Cargo.toml");
    assert!(
        !deps.iter().any(|d| d.starts_with("flashopt")),
        "flashopt-ir depends on {deps:?}"
    );
}

#[test]
fn the_gpu_back_end_implements_the_runtime() {
    let deps = dependencies("flashopt-cubecl/Cargo.toml");
    assert!(deps.iter().any(|d| d == "flashopt-runtime"), "{deps:?}");
}
