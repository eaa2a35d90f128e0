//! A definition that extends another written before it in the same `optimizer!` block:
//! the base's declarations (a redeclared one replaced in place, new ones after), its
//! options, and its rule unless the extension writes one.

use flashopt::ir::def::Stmt;
use flashopt::ir::{Codec, OptimizerSpec};
use flashopt::optimizers::{Sgd, SgdW};
use flashopt::{MasterMode, PlanConfig};

flashopt::optimizer! {
    /// Momentum SGD.
    #[flashopt(min_step = 1.0)]
    pub Momentum {
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-2 in 0.0..;
        hyper beta: f32 = 0.9 in 0.0..1.0;
        state m: signed;

        m = beta * m + g;
        p -= lr * m;
    }

    /// The same rule with a linear momentum codec and another default: no statements,
    /// so the base's rule.
    pub LinearMomentum extends Momentum {
        hyper beta: f32 = 0.95 in 0.0..1.0;
        state m: signed = int8_linear;
    }

    /// Nesterov's look-ahead: a rule of its own, one more hyper-parameter.
    pub Nesterov extends Momentum {
        hyper dampening: f32 = 0.0 in 0.0..=1.0;

        m = beta * m + (1.0 - dampening) * g;
        p -= lr * (beta * m + g);
    }
}

#[test]
fn an_extension_without_statements_keeps_the_base_rule() {
    let base = Momentum::definition();
    let ext = LinearMomentum::definition();
    assert_eq!(ext.name, "linearmomentum");
    assert_eq!(ext.body, base.body);
    let names = |d: &flashopt::ir::OptimizerDef| -> Vec<String> {
        d.hyper_params.iter().map(|h| h.name.clone()).collect()
    };
    assert_eq!(names(&ext), ["lr", "beta"], "redeclared in place");
    assert_eq!(ext.states[0].codec, Some(Codec::Int8Linear));
    assert_eq!(
        ext.learning_rate.as_ref().map(|(n, _)| n.as_str()),
        Some("lr")
    );
    assert_eq!(ext.min_step_relative_to_lr.map(|(v, _)| v), Some(1.0));
    assert_eq!(LinearMomentum::default().beta, 0.95);
    assert_eq!(Momentum::default().beta, 0.9);
    // The momentum decodes linearly: no softsign table, which the base's plan has.
    let softsign = "(c / 127.0) / (2.0 - abs(c / 127.0))";
    let config = PlanConfig::bf16(MasterMode::Int8);
    assert!(
        Momentum::plan(config)
            .unwrap()
            .to_string()
            .contains(softsign)
    );
    let plan = LinearMomentum::plan(config).unwrap();
    assert!(!plan.to_string().contains(softsign), "{plan}");
}

#[test]
fn an_extension_with_statements_writes_its_own_rule() {
    let ext = Nesterov::definition();
    let names: Vec<&str> = ext.hyper_params.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["lr", "beta", "dampening"]);
    let targets: Vec<&str> = ext
        .body
        .iter()
        .map(|s| match s {
            Stmt::Let { name, .. } => name.as_str(),
            Stmt::Assign { target, .. } => target.as_str(),
        })
        .collect();
    assert_eq!(targets, ["m", "p"]);
    assert_ne!(ext.body, Momentum::definition().body);
    let spec = Nesterov {
        dampening: 0.5,
        ..Nesterov::default()
    };
    assert!(spec.hyper_values().is_ok());
}

/// The shipped SgdW extends Sgd: the plan it compiles to is the one it had when it
/// restated Sgd's declarations (the plan snapshots hold it), and its fields are Sgd's
/// and its own.
#[test]
fn sgdw_extends_sgd() {
    let (sgd, sgdw) = (Sgd::definition(), SgdW::definition());
    let names = |d: &flashopt::ir::OptimizerDef| -> Vec<String> {
        d.hyper_params.iter().map(|h| h.name.clone()).collect()
    };
    assert_eq!(names(&sgdw)[..names(&sgd).len()], names(&sgd)[..]);
    assert_eq!(
        names(&sgdw)[names(&sgd).len()..],
        ["decouple_lr", "initial_lr"]
    );
    assert_eq!(sgdw.states, sgd.states);
    let w = SgdW {
        weight_decay: 0.1,
        decouple_lr: true,
        ..SgdW::default()
    };
    assert!(w.hyper_values().is_ok());
}
