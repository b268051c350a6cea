//! Bounds on the input, so that huge files, include bombs and binary garbage end in an error
//! instead of a hang or an out-of-memory kill. Real vm.conf files are a few KiB.

/// Longest single token, as parse.y's 8 KiB lexer buffer allows.
pub const MAX_TOKEN_LEN: usize = 8094;
/// Longest string after adjacent STRING tokens are joined.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Largest single configuration file.
pub const MAX_FILE_SIZE: usize = 4 * 1024 * 1024;
/// Largest sum of all files read by one load (top file plus every include).
pub const MAX_TOTAL_INPUT: usize = 16 * 1024 * 1024;
/// Deepest stack of files, the top file included.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one load may open, so repeated non-recursive includes cannot multiply.
pub const MAX_INCLUDED_FILES: usize = 256;
/// Most bytes produced by `$macro` expansions in one load.
pub const MAX_EXPANDED_BYTES: usize = 16 * 1024 * 1024;
/// After this many errors the parser stops; the rest would be noise.
pub const MAX_ERRORS: usize = 64;
