flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        state m: signed = int4;
        m = m + g;
        p -= lr * m;
    }
}

fn main() {}
