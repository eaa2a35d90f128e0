flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        p -= f64(lr * cols) * g;
    }
}

fn main() {}
