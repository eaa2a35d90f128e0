flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state m: signed;
        m = m * 0.9 + g;
        m = m * 0.5;
        p -= lr * m;
    }
}

fn main() {}
