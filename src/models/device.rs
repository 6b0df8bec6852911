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

/// A short name for the lock file and history (`cpu`, `cuda:0`, `metal:0`).
pub fn name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal:0".into(),
    }
}
