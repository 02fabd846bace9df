//! Contention benchmarks and the report renderer (being built).
