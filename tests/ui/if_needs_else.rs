flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        p -= if g > 0.0 { lr };
    }
}

fn main() {}
