//! `device: auto | cpu | cuda | metal` -> a candle device.

use candle_core::Device;

use crate::config::DeviceChoice;

pub fn select(choice: DeviceChoice) -> anyhow::Result<Device> {
    Ok(match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => {
            anyhow::ensure!(
                candle_core::utils::cuda_is_available(),
                "device: cuda, but this build has no CUDA support or no GPU was found (build with --features cuda)"
            );
            Device::new_cuda(0)?
        }
        DeviceChoice::Metal => {
            anyhow::ensure!(
                candle_core::utils::metal_is_available(),
                "device: metal, but this build has no Metal support (build with --features metal)"
            );
            Device::new_metal(0)?
        }
        DeviceChoice::Auto => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).unwrap_or(Device::Cpu)
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0).unwrap_or(Device::Cpu)
            } else {
                Device::Cpu
            }
        }
    })
}

/// The kind of device `choice` resolves to in this build (`cpu`, `cuda`, `metal`), without
/// starting it: what a stage that computes on the device declares.
pub fn resolve_kind(choice: DeviceChoice) -> &'static str {
    match choice {
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Cuda => "cuda",
        DeviceChoice::Metal => "metal",
        DeviceChoice::Auto if candle_core::utils::cuda_is_available() => "cuda",
        DeviceChoice::Auto if candle_core::utils::metal_is_available() => "metal",
        DeviceChoice::Auto => "cpu",
    }
}

/// The device `choice` resolves to in this build (`Cpu`, `Cuda`, `Metal`; never `Auto`).
pub fn resolve(choice: DeviceChoice) -> DeviceChoice {
    match resolve_kind(choice) {
        "cuda" => DeviceChoice::Cuda,
        "metal" => DeviceChoice::Metal,
        _ => DeviceChoice::Cpu,
    }
}

/// A short name for the lock file and history (`cpu`, `cuda:0`, `metal:0`).
pub fn name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal:0".into(),
    }
}
