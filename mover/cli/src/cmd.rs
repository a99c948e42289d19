//! One module per command group; each turns its arguments into a request of the `mover`
//! library, calls it, prints the report and says the exit code.

pub mod archive;
pub mod backup;
pub mod doctor;
pub mod files;
pub mod maintain;
pub mod restore;
pub mod serve;
