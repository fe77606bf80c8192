//! # llm-viz: looking inside the model
//!
//! Will hold attention visualisation: per-layer, per-head attention probabilities rendered
//! as self-contained HTML (no CDN) and static heatmaps.
//!
//! Nothing is implemented yet.
