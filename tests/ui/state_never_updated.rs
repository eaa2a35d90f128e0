flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state m: signed;
        state v: nonneg;
        m = m * 0.9 + g;
        p -= lr * m;
    }
}

fn main() {}
