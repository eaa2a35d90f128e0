flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state v: nonneg = int8_softsign;
        v = v + g * g;
        p -= lr * g / (v.sqrt() + 1e-8);
    }
}

fn main() {}
