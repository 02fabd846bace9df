//! The redis backend (being built).
