use machinery_core::prelude::*;

struct Point {
    x: i64,
    y: i64,
}

#[task]
fn norm(point: Point, scale: i64) -> Result<i64, TaskError> {
    Ok(scale * (point.x.abs() + point.y.abs()))
}

fn main() {}
