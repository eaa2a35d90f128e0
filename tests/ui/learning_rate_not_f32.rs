flashopt::optimizer! {
    #[flashopt(min_step = 1.0)]
    pub Broken {
        #[flashopt(learning_rate)]
        hyper nesterov: bool = false;
        hyper lr: f32 = 1e-3 in 0.0..;
        p -= lr * g;
    }
}

fn main() {}
