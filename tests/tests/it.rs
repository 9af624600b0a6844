//! End-to-end tests: the real binaries and real peers on loopback. One test binary,
//! one module per area.

mod it {
    pub mod agent;
    pub mod alerts;
    pub mod apps;
    pub mod checks;
    pub mod ingest;
    pub mod lean;
    pub mod nsca;
    pub mod reliability;
    pub mod storage;
    pub mod web;
}
