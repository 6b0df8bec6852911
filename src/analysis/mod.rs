//! The analysis of the latent spaces, free of candle and of the pipeline: PCA, k-means and
//! the clustering scores.

pub mod kmeans;
pub mod metrics;
pub mod pca;
pub mod stats;
