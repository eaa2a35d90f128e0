flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        #[flashopt(dithered)]
        state m: signed = f32;
        m = 0.9 * m + g;
        p -= lr * m;
    }
}

fn main() {}
