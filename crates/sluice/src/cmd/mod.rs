//! One module per subcommand: argument struct plus `run`.

pub mod sim;
pub mod tail;
pub mod validate;
pub mod worker;
