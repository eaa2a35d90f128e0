flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state r: nonneg per row;
        r = row_mean(g * g);
        p -= lr * g / row_mean(r);
    }
}

fn main() {}
