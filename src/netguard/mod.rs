//! Network guard (SPEC §7): egress allowed per destination and per executable. This module
//! holds the decision (`decide`), pure and unit-tested; the seccomp user-notification guard,
//! the resolver and live update build on it (issue 5).

pub mod decide;
