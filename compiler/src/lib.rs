//! wepoq compiler
