//! Models of lock algorithms (being built).
