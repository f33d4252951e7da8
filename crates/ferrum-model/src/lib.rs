//! ferrum-model
