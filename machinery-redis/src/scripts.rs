//! The Lua scripts, each prefixed with `lua/lib.lua`.

use redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// Every script the engine runs.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) fetch: Script,
    pub(crate) settle: Script,
    pub(crate) extend: Script,
    pub(crate) complete: Script,
    pub(crate) chord_done: Script,
    pub(crate) requeue: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            publish: script(include_str!("lua/publish.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            settle: script(include_str!("lua/settle.lua")),
            extend: script(include_str!("lua/extend.lua")),
            complete: script(include_str!("lua/complete.lua")),
            chord_done: script(include_str!("lua/chord_done.lua")),
            requeue: script(include_str!("lua/requeue.lua")),
        }
    }
}
