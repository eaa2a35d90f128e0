//! Load a checkpoint converted from flashoptim 0.1.4 (scripts/flashoptim_to_flashopt.py)
//! and compare what flashopt decodes from it with flashoptim's own f32 view of the same
//! state (scripts/flashoptim_import_check.py writes both).
//!
//! ```text
//! cargo run --release --example flashoptim_import -- DIR adamw lion sgd
//! ```

use flashopt::Optimizer as _;
use flashopt::optimizers;
use flashopt::runtime::CpuOptimizer;
use flashopt::{MasterMode, PlanConfig};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(&args[0]);
    let mut failed = false;
    for name in &args[1..] {
        let converted = dir.join(format!("{name}.safetensors"));
        let reference = std::fs::read(dir.join(format!("{name}-reference.safetensors"))).unwrap();
        let reference = safetensors::SafeTensors::deserialize(&reference).unwrap();
        // Tensor names and lengths from the converted file's metadata.
        let bytes = std::fs::read(&converted).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let count: usize = meta["tensors"].parse().unwrap();
        let def = optimizers::by_name(name).expect("a shipped optimizer");
        let mut opt = CpuOptimizer::new(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
        for i in 0..count {
            let tensor = &meta[&format!("tensor.{i}")];
            let len = reference
                .tensor(&format!("{tensor}::master"))
                .unwrap()
                .shape()[0];
            opt.add_tensor(tensor, &vec![0.0; len]).unwrap();
        }
        if let Err(e) = opt.load(&converted) {
            println!("{name}: load FAILED: {e}");
            failed = true;
            continue;
        }
        let exported = std::env::temp_dir().join(format!("flashopt-import-{name}.safetensors"));
        opt.export_f32(&exported).unwrap();
        let exported = std::fs::read(&exported).unwrap();
        let exported = safetensors::SafeTensors::deserialize(&exported).unwrap();
        let mut keys = reference.names();
        keys.sort();
        for key in keys {
            let theirs = f32s(reference.tensor(key).unwrap().data());
            let ours = f32s(exported.tensor(key).unwrap().data());
            let exact = theirs
                .iter()
                .zip(&ours)
                .filter(|(a, b)| a.to_bits() == b.to_bits())
                .count();
            let worst = theirs
                .iter()
                .zip(&ours)
                .map(|(a, b)| ((a - b).abs() / a.abs().max(1e-30)) as f64)
                .fold(0.0, f64::max);
            let ok = theirs.len() == ours.len() && worst <= 1e-5;
            failed |= !ok;
            println!(
                "{name} {key}: {} values, {:.3}% bit-exact, worst relative difference {worst:.2e}{}",
                theirs.len(),
                100.0 * exact as f64 / theirs.len() as f64,
                if ok { "" } else { " FAIL" }
            );
        }
        println!(
            "{name}: steps_taken {} (flashoptim {})",
            opt.steps_taken(),
            meta["steps_taken"]
        );
    }
    if failed {
        std::process::exit(1);
    }
}
