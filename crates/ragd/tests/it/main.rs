//! Black-box tests placeholder
