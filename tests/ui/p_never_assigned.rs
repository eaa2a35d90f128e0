flashopt::optimizer! {
    pub Broken {
        state m: signed;
        m = m + g;
    }
}

fn main() {}
