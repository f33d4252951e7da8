//! ferrum-text
