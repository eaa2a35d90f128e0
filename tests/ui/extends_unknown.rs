flashopt::optimizer! {
    pub Momentum {
        hyper lr: f32 = 1e-3 in 0.0..;
        state m: signed;
        m = 0.9 * m + g;
        p -= lr * m;
    }

    pub Nesterov extends Momentun {
        p -= lr * (0.9 * m + g);
    }
}

fn main() {}
