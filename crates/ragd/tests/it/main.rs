//! Black-box tests: each starts the real `ragd` binary on port 0 with a temporary data folder and the
//! real built-in embedder, and talks HTTP to it (one test binary, to keep link times down).

mod answers;
mod api;
mod bench;
mod durability;
mod formats;
mod gateway;
mod hostile;
mod mcp;
mod observability;
mod rerank;
mod shared;
mod snapshot;
mod standin;
mod support;
mod url_ingest;
mod web;
