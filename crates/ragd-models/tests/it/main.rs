//! Integration tests of ragd-models: one binary (`it`) so the model is loaded once per run.

mod builtin;
mod fetch;
mod http;
mod support;
