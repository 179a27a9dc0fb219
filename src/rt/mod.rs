//! Runtime helpers with no knowledge of HTTP or routing: worker threads, the drain tracker, the clock, the
//! tunnel copy, and dropping privileges.

pub mod clock;
pub mod privileges;
pub mod tracker;
pub mod tunnel;
pub mod workers;
