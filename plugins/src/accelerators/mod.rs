//! Accelerators: whole and HAMi-shared devices (`Devices`, with its
//! fragmentation score) and DRA claims (`DynamicResources`). What both feed
//! (the device-domain aggregates) is in [`crate::common::device_domains`].

pub mod devices;
pub mod dra;
