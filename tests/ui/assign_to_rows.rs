flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        rows = 2.0;
        p -= lr * g;
    }
}

fn main() {}
