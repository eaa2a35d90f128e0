flashopt::optimizer! {
    #[flashopt(min_steps = 1.0)]
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        p -= lr * g;
    }
}

fn main() {}
