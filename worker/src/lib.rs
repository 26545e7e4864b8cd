//! MeshChat worker: serves chat over REST, WebSocket and SSE, consumes Kafka, keeps
//! conversation context and answers with an OpenAI-compatible LLM.
//!
//! Components (docs/architecture.md has the map): the log (`log`, Kafka), the owner (`owner`,
//! carrying out the pure partition machine of `ownership` over the conversation `store`, with
//! answers from the `llm`), live delivery (`live`), the mesh view (`mesh`), and the HTTP API
//! (`http`) over a service trait, with callers resolved by `auth`; `node` assembles them from the `config`.
#![forbid(unsafe_code)]

pub mod auth;
mod config;
mod context;
mod drain;
pub mod fuzz;
mod http;
mod index;
mod limits;
mod live;
mod llm;
mod load;
mod log;
mod logging;
mod mesh;
mod metrics;
mod node;
mod owner;
mod ownership;
mod retry;
mod store;
pub mod telemetry;
mod tokenizer;
mod validate;
mod view;

pub use config::{Config, ConfigError};
pub use drain::client as drain_client;
pub use logging::init as init_logging;
pub use meshchat_wire::worker::LogFormat;
pub use node::serve;
pub use store::Store;
pub use tokenizer::{Encoding, Tokenizer};
