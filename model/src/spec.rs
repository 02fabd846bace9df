//! Sequential spec (being built).
