//! latentscope: does an autoencoder's latent space group MNIST digits by class?
//!
//! A reproducible pipeline of cached stages. See ARCHITECTURE.md for the code map.

pub mod analysis;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod figures;
pub mod hub;
pub mod models;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod stages;
pub mod tensorfile;
pub mod train;

/// The tool's version, recorded in every lock entry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
