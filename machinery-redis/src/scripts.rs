//! The Lua scripts, each prefixed with `lua/lib.lua`.

use redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

/// Every script the engine runs.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) fetch: Script,
    pub(crate) settle: Script,
    pub(crate) extend: Script,
    pub(crate) complete: Script,
    pub(crate) chord_done: Script,
    pub(crate) requeue: Script,
    pub(crate) store_open: Script,
}

impl Scripts {
    /// The scripts; with `shebang` (Redis 7 and later) each starts with `#!lua`, which
    /// makes Redis check that a script touches the keys of one cluster slot only and
    /// refuse it whole, before it runs, when the server is out of memory.
    pub(crate) fn new(shebang: bool) -> Self {
        let script = |body: &str| {
            let head = if shebang { "#!lua\n" } else { "" };
            Script::new(&format!("{head}{LIB}\n{body}"))
        };
        Scripts {
            publish: script(include_str!("lua/publish.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            settle: script(include_str!("lua/settle.lua")),
            extend: script(include_str!("lua/extend.lua")),
            complete: script(include_str!("lua/complete.lua")),
            chord_done: script(include_str!("lua/chord_done.lua")),
            requeue: script(include_str!("lua/requeue.lua")),
            store_open: script(include_str!("lua/store_open.lua")),
        }
    }

    /// Every script, to load them all again (a restarted Redis forgets them).
    pub(crate) fn all(&self) -> [&Script; 8] {
        [
            &self.publish,
            &self.fetch,
            &self.settle,
            &self.extend,
            &self.complete,
            &self.chord_done,
            &self.requeue,
            &self.store_open,
        ]
    }
}
