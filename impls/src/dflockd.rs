//! The dflockd backend (being built).
