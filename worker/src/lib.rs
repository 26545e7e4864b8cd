//! MeshChat worker: serves chat over REST, WebSocket and SSE, consumes Kafka, keeps
//! conversation context and answers with an OpenAI-compatible LLM.
#![deny(unsafe_code)]

mod answer;
pub mod config;
pub mod context;
pub mod drain;
pub mod held;
mod http;
mod hub;
pub mod kafka;
pub mod lease;
pub mod live;
pub mod llm;
pub mod load;
pub mod mesh;
mod metrics;
mod owner;
pub mod ownership;
mod run;
mod state;
pub mod store;
pub mod tokenizer;
pub mod validate;
pub mod view;

pub use config::Config;
pub use http::app;
pub use run::run;
