flashopt::optimizer! {
    pub Broken {
        hyper warmup: i64 = 0.5 in 0..;
        p -= 0.1 * g;
    }
}

fn main() {}
