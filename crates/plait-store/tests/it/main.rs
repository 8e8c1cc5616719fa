//! Integration tests of plait-store against a real fjall database in a temp directory.

mod support;

mod consumers;
mod convergence;
mod fixture;
mod history;
mod ingest;
mod model;
mod origins;
mod repair;
mod snapshots;
mod writes;
