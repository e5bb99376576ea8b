//! Minimally covering NSEC records made on the fly (to be built).
