//! Two tasks registered under one name: the worker refuses to start and names both.

use machinery_core::prelude::*;

mod billing {
    use super::*;
    #[task(name = "charge")]
    pub async fn charge(cents: u64) -> Result<u64, TaskError> {
        Ok(cents)
    }
}

mod legacy {
    use super::*;
    #[task(name = "charge")]
    pub async fn charge(cents: u64, currency: String) -> Result<String, TaskError> {
        Ok(format!("{cents} {currency}"))
    }
}

#[tokio::test]
async fn worker_refuses_duplicate_names() {
    let server = Server::memory();
    let err = Worker::auto()
        .server(&server)
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("task name `charge` is registered twice"),
        "{err}"
    );
    assert!(err.contains("billing::charge"), "{err}");
    assert!(err.contains("legacy::charge"), "{err}");
    // An explicit list with only one of them is fine.
    let w = Worker::new()
        .task(billing::charge::ENTRY)
        .server(&server)
        .spawn()
        .unwrap();
    assert_eq!(
        billing::charge::s(5)
            .send_with(&server)
            .await
            .unwrap()
            .get()
            .await
            .unwrap(),
        5
    );
    w.shutdown().await.unwrap();
    let _ = legacy::charge::NAME;
}

#[tokio::test]
async fn worker_without_tasks_or_server_says_why() {
    let err = Worker::new()
        .server(&Server::memory())
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tasks registered"), "{err}");
    let err = Worker::new()
        .task(billing::charge::ENTRY)
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(err.contains("Server::install"), "{err}");
    let err = billing::charge::send(1).await.unwrap_err().to_string();
    assert!(err.contains("Server::install"), "{err}");
}
