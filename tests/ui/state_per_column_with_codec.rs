flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state c: nonneg = uint8_sqrt per column;
        c = col_mean(g * g);
        p -= lr * g / (c.sqrt() + 1e-8);
    }
}

fn main() {}
