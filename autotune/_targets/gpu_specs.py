"""Public hardware facts of the GPUs we can describe to XLA without one.

Each spec renders to a `GpuTargetConfigProto` in protobuf text format, the
input of `jax.experimental.topologies.get_topology_desc(platform="cuda",
target_config=...)`. Only fields known to both jaxlib 0.10.2 and 0.11.x are
written (XLA's `xla/stream_executor/device_description.proto`).

Sources: the device dumps XLA keeps in `xla/tools/hlo_opt/gpu_specs/*.txtpb`
(H100 SXM and PCIe, A100 SXM4 40 and 80 GB: every field of those cards below
is copied from them), NVIDIA's datasheets (H200, L4: SM count, boost clock,
bandwidth, L2) and the CUDA programming guide's table of per-compute-
capability limits (shared memory, threads and registers per SM and block).
Peak FLOP/s (`peak_flops`) are NVIDIA's datasheet figures, named beside
each card; the datasheets give Hopper's and L4's tensor-core figures with
sparsity, halved here for dense (`peak_flops.dense`).
"""

from __future__ import annotations

import dataclasses

from autotune._targets.peak_flops import TERA, PeakFlops, dense

MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One GPU model, in the units `GpuDeviceInfoProto` uses."""

    product: str  # the name CUDA reports; jax's `device_kind`
    compute_capability: tuple[int, int]
    sm_count: int  # `core_count`
    fp32_lanes_per_sm: int  # `fpus_per_core`
    clock_ghz: float  # boost clock
    memory_bandwidth: int  # bytes/s
    l2_cache_bytes: int
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int
    threads_per_sm: int
    nvidia_smi_memory_mib: int  # the card's total as nvidia-smi shows it
    cuda_memory_bytes: int | None = None  # cuDeviceTotalMem from a device dump
    shared_memory_per_block: int = 48 * 1024
    threads_per_block: int = 1024
    threads_per_warp: int = 32
    registers_per_sm: int = 65536
    registers_per_block: int = 65536
    block_dim_limits: tuple[int, int, int] = (2**31 - 1, 65535, 65535)
    peak_flops: PeakFlops | None = None  # one card's dense peak, by dtype

    @property
    def memory_bytes(self) -> int:
        """The card's total memory in bytes (nvidia-smi's figure)."""
        return self.nvidia_smi_memory_mib * MIB

    @property
    def device_memory_size(self) -> int:
        """What XLA reads on a real device (the CUDA driver's total), where a
        dump of this card is known; otherwise the card's total."""
        return self.cuda_memory_bytes or self.memory_bytes


_HOPPER = dict(
    compute_capability=(9, 0),
    fp32_lanes_per_sm=128,
    shared_memory_per_sm=228 * 1024,
    shared_memory_per_block_optin=227 * 1024,
    threads_per_sm=2048,
    l2_cache_bytes=50 * MIB,
)
_A100 = dict(
    compute_capability=(8, 0),
    fp32_lanes_per_sm=64,
    sm_count=108,
    clock_ghz=1.41,
    shared_memory_per_sm=164 * 1024,
    shared_memory_per_block_optin=163 * 1024,
    threads_per_sm=2048,
    l2_cache_bytes=40 * MIB,
    # NVIDIA A100 Tensor Core GPU datasheet, SXM column (dense figures as printed):
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    peak_flops=PeakFlops(
        float32=156 * TERA,  # TF32 Tensor Core
        bfloat16=312 * TERA,  # BFLOAT16 Tensor Core
        float16=312 * TERA,  # FP16 Tensor Core
        source="NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), SXM",
    ),
)
# NVIDIA H100 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/h100/),
# figures with sparsity: SXM TF32 989, BF16 1,979, FP16 1,979 TFLOPS.
_H100_SXM_FLOPS = PeakFlops(
    float32=dense(989),
    bfloat16=dense(1979),
    float16=dense(1979),
    source="NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100), H100 SXM, dense",
)

GPU_SPECS: dict[str, GpuSpec] = {
    "h100-sxm-80gb": GpuSpec(
        product="NVIDIA H100 80GB HBM3",
        sm_count=132,
        clock_ghz=1.98,
        memory_bandwidth=3_352_320_000_000,
        nvidia_smi_memory_mib=81559,
        cuda_memory_bytes=84_978_434_048,
        peak_flops=_H100_SXM_FLOPS,
        **_HOPPER,
    ),
    "h100-pcie-80gb": GpuSpec(
        product="NVIDIA H100 PCIe",
        sm_count=114,
        clock_ghz=1.755,
        memory_bandwidth=2_039_040_000_000,
        nvidia_smi_memory_mib=81559,
        cuda_memory_bytes=84_942_979_072,
        # The same datasheet, H100 PCIe, with sparsity: TF32 756, BF16 1,513, FP16 1,513.
        peak_flops=PeakFlops(
            float32=dense(756),
            bfloat16=dense(1513),
            float16=dense(1513),
            source="NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100), H100 PCIe, dense",
        ),
        **_HOPPER,
    ),
    "h200-141gb": GpuSpec(
        product="NVIDIA H200",
        sm_count=132,
        clock_ghz=1.98,
        memory_bandwidth=4_800_000_000_000,
        nvidia_smi_memory_mib=143771,
        # NVIDIA H200 datasheet (https://www.nvidia.com/en-us/data-center/h200/), H200 SXM,
        # with sparsity: TF32 989, BF16 1,979, FP16 1,979 TFLOPS.
        peak_flops=PeakFlops(
            float32=dense(989),
            bfloat16=dense(1979),
            float16=dense(1979),
            source="NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200), H200 SXM, dense",
        ),
        **_HOPPER,
    ),
    "a100-40gb": GpuSpec(
        product="NVIDIA A100-SXM4-40GB",
        memory_bandwidth=1_555_200_000_000,
        nvidia_smi_memory_mib=40960,
        cuda_memory_bytes=42_331_013_120,
        **_A100,
    ),
    "a100-80gb": GpuSpec(
        product="NVIDIA A100-SXM4-80GB",
        memory_bandwidth=2_039_040_000_000,
        nvidia_smi_memory_mib=81920,
        cuda_memory_bytes=85_100_068_864,
        **_A100,
    ),
    "l4-24gb": GpuSpec(
        product="NVIDIA L4",
        compute_capability=(8, 9),
        sm_count=58,
        fp32_lanes_per_sm=128,
        clock_ghz=2.04,
        memory_bandwidth=300_000_000_000,
        l2_cache_bytes=48 * MIB,
        shared_memory_per_sm=100 * 1024,
        shared_memory_per_block_optin=99 * 1024,
        threads_per_sm=1536,
        nvidia_smi_memory_mib=23034,
        # NVIDIA L4 datasheet (https://www.nvidia.com/en-us/data-center/l4/), with
        # sparsity: TF32 120, BF16 242, FP16 242 TFLOPS.
        peak_flops=PeakFlops(
            float32=dense(120),
            bfloat16=dense(242),
            float16=dense(242),
            source="NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4), dense",
        ),
    ),
}


def render_target_config(spec: GpuSpec) -> str:
    """`spec` as `GpuTargetConfigProto` text."""
    major, minor = spec.compute_capability
    bx, by, bz = spec.block_dim_limits
    info = [
        ("threads_per_block_limit", spec.threads_per_block),
        ("threads_per_warp", spec.threads_per_warp),
        ("shared_memory_per_block", spec.shared_memory_per_block),
        ("shared_memory_per_core", spec.shared_memory_per_sm),
        ("threads_per_core_limit", spec.threads_per_sm),
        ("core_count", spec.sm_count),
        ("fpus_per_core", spec.fp32_lanes_per_sm),
        ("block_dim_limit_x", bx),
        ("block_dim_limit_y", by),
        ("block_dim_limit_z", bz),
        ("memory_bandwidth", spec.memory_bandwidth),
        ("l2_cache_size", spec.l2_cache_bytes),
        ("clock_rate_ghz", spec.clock_ghz),
        ("device_memory_size", spec.device_memory_size),
        ("shared_memory_per_block_optin", spec.shared_memory_per_block_optin),
        ("registers_per_core_limit", spec.registers_per_sm),
        ("registers_per_block_limit", spec.registers_per_block),
    ]
    lines = ["gpu_device_info {"]
    lines += [f"  {field}: {value}" for field, value in info]
    lines += [
        f"  cuda_compute_capability {{ major: {major} minor: {minor} }}",
        "}",
        'platform_name: "CUDA"',
        f'device_description_str: "{spec.product}"',
    ]
    return "\n".join(lines) + "\n"
