//! latentscope: does an autoencoder's latent space group MNIST digits by class?
//!
//! A reproducible pipeline of cached stages. See ARCHITECTURE.md for the code map.

pub mod analysis;
pub mod artifacts;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod figures;
pub mod html;
pub mod hub;
pub mod models;
pub mod render;
pub mod report;
pub mod rng;
pub mod runs;
pub mod stages;
pub mod tensorfile;
pub mod train;

/// The engine (its own crate, so that the compiler keeps it free of the experiment).
pub use latentscope_engine as pipeline;
pub use latentscope_engine::progress;

/// The tool's version, recorded in every lock entry (the engine and this crate share it).
pub const VERSION: &str = latentscope_engine::VERSION;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
