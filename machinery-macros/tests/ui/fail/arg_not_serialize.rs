use machinery_core::prelude::*;

#[derive(serde::Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[task]
async fn norm(scale: i64, point: Point) -> Result<i64, TaskError> {
    Ok(scale * (point.x.abs() + point.y.abs()))
}

fn main() {}
