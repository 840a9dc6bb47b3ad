//! Accelerators: whole and HAMi-shared devices (`Devices`), DRA claims
//! (`DynamicResources`) and the fragmentation score of device capacity.

pub mod devices;
pub mod dra;
pub mod fragmentation;
