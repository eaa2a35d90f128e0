flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        #[flashopt(stochastic)]
        state m: signed;
        m = 0.9 * m + g;
        p -= lr * m;
    }
}

fn main() {}
