//! Cross-process tests: real `plaitd` processes on loopback, real gRPC, SIGKILL.

mod support;

mod api;
mod backup;
mod bad_input;
mod chart;
mod cli;
mod consumers;
mod crash;
mod edge;
mod hostile;
mod invariants;
mod kube;
mod operator;
mod replication;
mod security;
