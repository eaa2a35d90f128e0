flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state m: signed;
        m = m * 0.9 + gard;
        p -= lr * m;
    }
}

fn main() {}
