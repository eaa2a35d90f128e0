flashopt::optimizer! {
    pub Broken {
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper clip: f32 = 1.0 in 0.0..;
        g = clamp(g, -clip, clip);
        p -= lr * g;
    }
}

fn main() {}
