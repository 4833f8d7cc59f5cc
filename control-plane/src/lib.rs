//! The Bagui control plane: enrollment, the QUIC ingest of agent sessions, the durable store,
//! the operator API and the CLI behind `bagui-cp`.
//!
//! See ARCHITECTURE.md for the map. In short: `ingest` is the only module that knows quinn,
//! `store` the only one that knows sled, `api` and `client` the only ones that know HTTP;
//! `admin` holds every operator action so the API and the CLI share one implementation.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_ops;
pub mod admin_service;
pub mod api;
pub mod api_service;
pub mod audit;
pub mod cli;
pub mod cli_ops;
pub mod cli_service;
pub mod client;
pub mod clock;
pub mod config;
pub mod console;
pub mod datadir;
pub mod demo;
pub mod dispatch;
pub mod divisions;
pub mod enroll;
pub mod exposition;
pub mod ingest;
pub mod inventory;
pub mod metrics;
pub mod notifier;
pub mod openapi;
pub mod package_index;
pub mod pki;
pub mod probes;
pub mod receive_thread;
pub mod server;
pub mod store;
pub mod syslog;
pub mod thresholds;
pub mod tls;
pub mod topology;
pub mod users;
