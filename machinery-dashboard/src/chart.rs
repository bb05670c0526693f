//! Charts drawn on the server as SVG: no script, no library.
