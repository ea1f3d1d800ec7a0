//! Part of the data-plane probe (filled in below)
