mod tasks {
    use machinery_core::prelude::*;

    pub(crate) struct Internal;

    #[task]
    pub(crate) async fn visible(a: u8) -> Result<u8, TaskError> {
        Ok(a)
    }

    #[task]
    pub(super) fn also_visible() -> Result<(), TaskError> {
        let _ = Internal;
        Ok(())
    }

    #[task]
    async fn private_task() -> Result<(), TaskError> {
        Ok(())
    }

    pub(crate) fn use_private() -> &'static str {
        private_task::NAME
    }
}

fn main() {
    let _ = tasks::visible::s(1);
    let _ = tasks::also_visible::s();
    let _ = tasks::visible::ENTRY;
    assert_eq!(tasks::use_private(), "private_task");
}
