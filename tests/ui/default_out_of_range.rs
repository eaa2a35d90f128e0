flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper beta: f32 = 1.5 in 0.0..1.0;
        state m: signed;
        m = beta * m + (1.0 - beta) * g;
        p -= lr * m;
    }
}

fn main() {}
