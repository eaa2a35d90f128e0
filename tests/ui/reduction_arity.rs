flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        p -= lr * g / tensor_sum(g, p);
    }
}

fn main() {}
