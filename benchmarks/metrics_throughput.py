"""I3D feature-extraction throughput for FVD/KVD (videos per minute), with random weights.

Measures the whole per-batch path of :class:`dynamicrafter.metrics.i3d.I3DFeatureExtractor`: uint8 clips at the
256x256 resolution of the DynamiCrafter-256 protocol -> preset preprocessing (resize / crop to 224x224, [-1, 1])
-> I3D forward at the standard input (16 frames, 224x224) -> 400-d logits. Weights are random (throughput does
not depend on their values), so no weight file is needed.

    python benchmarks/metrics_throughput.py [--batch-size 8] [--batches 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dynamicrafter.metrics.i3d import FVD_NUM_FRAMES, FVDConfig, I3DFeatureExtractor, InceptionI3D

CLIP_SIZE = 256  # DynamiCrafter-256 videos and the protocol's real clips
SECONDS_PER_MINUTE = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches (after one warm-up batch)")
    parser.add_argument("--preset", default="tats", help="I3D preprocessing preset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    extractor = I3DFeatureExtractor(InceptionI3D(), "state_dict",
                                    FVDConfig(preset=args.preset, batch_size=args.batch_size, device=args.device))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (FVD_NUM_FRAMES, CLIP_SIZE, CLIP_SIZE, 3), dtype=np.uint8)
             for _ in range(args.batch_size)]

    extractor(clips)  # warm-up: kernel selection, allocator
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.batches):
        start = time.perf_counter()
        features = extractor(clips)
        if extractor.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert features.shape == (args.batch_size, 400)
    per_batch = float(np.median(times))
    rate = args.batch_size / per_batch * SECONDS_PER_MINUTE
    print(f"I3D features ({extractor.device}, {torch.get_num_threads()} threads, preset {args.preset}, "
          f"batch {args.batch_size} x {FVD_NUM_FRAMES} frames, {CLIP_SIZE}x{CLIP_SIZE} -> 224x224): "
          f"{per_batch:.2f} s/batch (median of {args.batches}), {rate:.1f} videos/min")


if __name__ == "__main__":
    main()
