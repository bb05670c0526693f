use machinery_core::prelude::*;

struct Report {
    total: i64,
}

#[task]
async fn report(total: i64) -> Result<Report, TaskError> {
    Ok(Report { total })
}

fn main() {}
