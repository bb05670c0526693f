use std::collections::HashMap;

use machinery_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Shape {
    Circle { center: Point, radius: f64 },
    Polygon(Vec<Point>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub areas: HashMap<String, f64>,
}

#[task]
pub async fn measure(
    shapes: Vec<Shape>,
    origin: Option<Point>,
    labels: HashMap<String, Vec<u8>>,
    pair: (u8, std::string::String),
    fixed: [u16; 4],
    mut count: u32,
) -> Result<Report, TaskError> {
    count += 1;
    let _ = (shapes, origin, labels, pair, fixed, count);
    Ok(Report {
        areas: HashMap::new(),
    })
}

fn main() {
    let _: Signature<Report> = measure::s(
        vec![Shape::Polygon(vec![Point { x: 0.0, y: 0.0 }])],
        None,
        HashMap::new(),
        (1, "one".into()),
        [1, 2, 3, 4],
        0,
    );
    assert_eq!(
        measure::SCHEMA,
        "measure(Vec<Shape>, Option<Point>, HashMap<String, Vec<u8>>, (u8, std::string::String), [u16; 4], u32) -> Report"
    );
    let _ = Shape::Circle {
        center: Point { x: 0.0, y: 0.0 },
        radius: 1.0,
    };
}
