use machinery_core::prelude::*;

#[task]
async fn log(message: String) {
    println!("{message}");
}

fn main() {}
