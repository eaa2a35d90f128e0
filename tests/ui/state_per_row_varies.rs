flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state r: nonneg per row;
        r = g * g;
        p -= lr * g / (r.sqrt() + 1e-8);
    }
}

fn main() {}
