//! vmd's daemon logic, as a library so the binary's roles and the tests share it.

pub mod daemon;
pub mod registry;
pub mod transfer;
